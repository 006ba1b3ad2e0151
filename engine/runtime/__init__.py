"""The daemon's runtime: the live view of unfinished runs and the parts that move them along
(hosts, submission, dispatch, following, ingest, adaptive sweeps, reconcile), put together by
the `Supervisor` facade."""
