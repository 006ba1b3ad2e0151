"""The store's schema as numbered migrations; `schema_version` records how many have run."""

# What a text filter searches besides the reason: the run's name and its command as one
# lower-case line. Both are fixed when a run is queued, so this is computed once per run.
RUN_WORDS = "lower(name || ' ' || array_to_string(CAST(CAST(argv AS JSON) AS VARCHAR[]), ' '))"

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema.
    """
    CREATE TABLE hosts (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        spec JSON NOT NULL,
        state VARCHAR NOT NULL,
        reason VARCHAR,
        updated_at DOUBLE NOT NULL
    );
    CREATE TABLE runs (
        id BIGINT PRIMARY KEY,
        name VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        argv JSON NOT NULL,
        cwd VARCHAR NOT NULL,
        seed BIGINT NOT NULL,
        capture JSON NOT NULL,
        env JSON NOT NULL,
        resources JSON NOT NULL,
        requested_host VARCHAR,
        host VARCHAR,
        attempt INTEGER NOT NULL DEFAULT 0,
        pid BIGINT,
        pid_start_time DOUBLE,
        run_dir VARCHAR,
        created_at DOUBLE NOT NULL,
        started_at DOUBLE,
        ended_at DOUBLE,
        exit_code INTEGER,
        failure_class VARCHAR,
        reason VARCHAR,
        cancel_requested BOOLEAN NOT NULL DEFAULT false,
        manifest JSON
    );
    CREATE TABLE attempts (
        run_id BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        host VARCHAR NOT NULL,
        run_dir VARCHAR NOT NULL,
        started_at DOUBLE NOT NULL,
        ended_at DOUBLE,
        exit_code INTEGER,
        status VARCHAR NOT NULL,
        failure_class VARCHAR,
        reason VARCHAR
    );
    CREATE TABLE metrics (
        run_id BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        key VARCHAR NOT NULL,
        step BIGINT,
        value DOUBLE NOT NULL,
        wall_time DOUBLE NOT NULL,
        line BIGINT NOT NULL
    );
    CREATE TABLE events (
        run_id BIGINT NOT NULL,
        time DOUBLE NOT NULL,
        from_status VARCHAR,
        to_status VARCHAR NOT NULL,
        reason VARCHAR
    );
    CREATE TABLE log_offsets (
        run_id BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        byte_offset BIGINT NOT NULL,
        lines BIGINT NOT NULL,
        bad_markers BIGINT NOT NULL,
        PRIMARY KEY (run_id, attempt)
    );
    CREATE TABLE host_samples (
        host VARCHAR NOT NULL,
        time DOUBLE NOT NULL,
        cpu_percent DOUBLE NOT NULL,
        cpu_per_core DOUBLE[] NOT NULL,
        mem_used_mb DOUBLE NOT NULL,
        mem_total_mb DOUBLE NOT NULL,
        gpus JSON NOT NULL
    );
    """,
    # 2: scheduling: what a run asks for and how it is queued; the GPUs each attempt held.
    """
    ALTER TABLE runs ADD COLUMN priority INTEGER DEFAULT 0;
    ALTER TABLE runs ADD COLUMN held BOOLEAN DEFAULT false;
    ALTER TABLE runs ADD COLUMN gpus JSON DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN model_type VARCHAR;
    ALTER TABLE runs ADD COLUMN tags JSON DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN requires JSON DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN sweep VARCHAR;
    ALTER TABLE runs ADD COLUMN max_concurrent INTEGER;
    ALTER TABLE runs ADD COLUMN retry JSON DEFAULT '{}';
    ALTER TABLE runs ADD COLUMN queued_at DOUBLE;
    ALTER TABLE runs ADD COLUMN not_before DOUBLE DEFAULT 0;
    ALTER TABLE attempts ADD COLUMN gpus JSON DEFAULT '[]';
    UPDATE runs SET queued_at = created_at;
    """,
    # 3: sweeps, and the parameters of each run.
    """
    CREATE TABLE sweeps (
        id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        file VARCHAR NOT NULL,
        method VARCHAR NOT NULL,
        trials INTEGER NOT NULL,
        snapshot VARCHAR,
        metric JSON,
        created_at DOUBLE NOT NULL
    );
    ALTER TABLE runs ADD COLUMN params JSON DEFAULT '{}';
    """,
    # 4: adaptive sweeps: the experiment as submitted (to go on sampling after a restart),
    # whether the sweep was cancelled, each run's trial numbers, and a pruning in progress.
    """
    ALTER TABLE sweeps ADD COLUMN experiment JSON;
    ALTER TABLE sweeps ADD COLUMN cancelled BOOLEAN DEFAULT false;
    ALTER TABLE runs ADD COLUMN trial JSON;
    ALTER TABLE runs ADD COLUMN prune_reason VARCHAR;
    """,
    # 5: each run's metrics summed up (count, last, min, max per key), kept with every ingest,
    # so tables sort and filter by a metric without scanning every point.
    """
    CREATE TABLE run_metrics (
        run_id BIGINT NOT NULL,
        key VARCHAR NOT NULL,
        count BIGINT NOT NULL,
        last DOUBLE,
        last_step BIGINT,
        min DOUBLE,
        max DOUBLE,
        PRIMARY KEY (run_id, key)
    );
    INSERT INTO run_metrics
    SELECT run_id, key, count(*), arg_max(value, attempt * 10000000000 + line),
           arg_max(step, attempt * 10000000000 + line), min(value), max(value)
    FROM metrics GROUP BY run_id, key;
    """,
    # 6: documented read-only views for `engine sql`.
    """
    CREATE VIEW runs_v AS
        SELECT id, name, status, sweep, model_type, host, seed, attempt, exit_code,
               failure_class, reason, created_at, started_at, ended_at,
               ended_at - started_at AS duration_s, params
        FROM runs;
    CREATE VIEW metrics_v AS
        SELECT run_id, attempt, key, step, value, wall_time FROM metrics;
    CREATE VIEW params_v AS
        SELECT r.id AS run_id, r.sweep, p.key AS name, p.value AS value
        FROM runs r, json_each(r.params) p;
    """,
    # 7: each run's name and command in one lower-case line, for text filters (a scan of one
    # column is about twice as fast as case-folding three as the filter is typed).
    f"""
    ALTER TABLE runs ADD COLUMN words VARCHAR;
    UPDATE runs SET words = {RUN_WORDS};
    """,
    # 8: the same words stored uncompressed: DuckDB's dictionary-FSST strings made a text
    # filter spend more time decompressing the column than searching it (8.5 → 5.2 ms a
    # search over 100,000 runs).
    f"""
    ALTER TABLE runs DROP COLUMN words;
    ALTER TABLE runs ADD COLUMN words VARCHAR USING COMPRESSION uncompressed;
    UPDATE runs SET words = {RUN_WORDS};
    """,
    # 9: the data linked into each attempt's work directory, and whether the command still
    # holds {run_id}-style placeholders that are filled in as each attempt starts; the seed
    # each sweep's sampler drew from.
    """
    ALTER TABLE runs ADD COLUMN data JSON DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN templated BOOLEAN DEFAULT false;
    ALTER TABLE sweeps ADD COLUMN sampler_seed BIGINT;
    """,
    # 10: attempts given up on while their host was away, whose copy may still run there (to be
    # killed when it returns, whatever restarts happen meanwhile); each run's metric summary
    # over its final attempt only, as a retried run's result is its last attempt's.
    """
    ALTER TABLE attempts ADD COLUMN abandoned BOOLEAN DEFAULT false;
    DELETE FROM run_metrics;
    INSERT INTO run_metrics
    SELECT m.run_id, m.key, count(*), arg_max(m.value, m.line), arg_max(m.step, m.line),
           min(m.value), max(m.value)
    FROM metrics m JOIN runs r ON r.id = m.run_id AND m.attempt = r.attempt
    GROUP BY m.run_id, m.key;
    """,
    # 11: where a cluster ran an attempt: its batch job ("123", "123_4" in an array) and node.
    """
    ALTER TABLE attempts ADD COLUMN IF NOT EXISTS batch_job VARCHAR;
    ALTER TABLE attempts ADD COLUMN IF NOT EXISTS node VARCHAR;
    """,
    # 12: a smoke test's sweep (one short trial per model before the full sweep): kept apart
    # from the experiment's results and estimates; a sweep's baseline configuration, which its
    # results compare every other one with; a run's cross-validation fold; a sweep's steps of
    # evaluation after training, and an evaluation run's trained run and split.
    """
    ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS smoke BOOLEAN DEFAULT false;
    ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS baseline JSON;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS fold INTEGER;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS parent BIGINT;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS split VARCHAR;
    ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS evaluate JSON;
    """,
    # 13: the watchdog (what it watches in a run, what it saw, and why it stopped a run that
    # diverged); the params a sweep samples on a log scale (drawn on log axes); aliases
    # naming runs (a small model registry), and every move of each.
    """
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS watch JSON DEFAULT '{}';
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS flag VARCHAR;
    ALTER TABLE runs ADD COLUMN IF NOT EXISTS diverged VARCHAR;
    ALTER TABLE sweeps ADD COLUMN IF NOT EXISTS log_params JSON DEFAULT '[]';
    CREATE TABLE IF NOT EXISTS aliases (
        name VARCHAR PRIMARY KEY,
        run_id BIGINT NOT NULL,
        note VARCHAR,
        set_at DOUBLE NOT NULL
    );
    CREATE TABLE IF NOT EXISTS alias_moves (
        name VARCHAR NOT NULL,
        from_run BIGINT,
        to_run BIGINT,
        note VARCHAR,
        time DOUBLE NOT NULL
    );
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
