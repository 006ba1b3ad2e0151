# Runyard run wrapper (POSIX sh): runs one command in its own session and leaves its story in
# ATTEMPT_DIR: `pid` first, all output in `output.log`, and `exit_code` last, in one write (so
# an `exit_code` that is not empty is whole; a rename would cost an exec, a tenth of a short run).
# usage: sh wrapper.sh ATTEMPT_DIR [--forward SIGNAL] [--copy SNAPSHOT WORK] \
#            [--link SOURCE PLACE]... --cd DIR -- COMMAND [ARG...]
# --copy makes the attempt's own work directory from a read-only code snapshot (a copy, so that
# nothing the run writes reaches the snapshot or another run); --link makes WORK/PLACE a link to
# data the snapshot does not carry; --cd is where the command starts; --forward passes SIGNAL,
# sent to this shell alone (Slurm's warning before a time limit), on to the command.
dir=$1
shift
# A TERM, INT or HUP sent to the whole process group is for the command; the wrapper lives on to
# record how it ended. (A trapped signal is reset to its default in the command it runs.)
trap ':' TERM INT HUP
echo "$$" > "$dir/pid"  # the daemon also has the pid from the spawn; no rename needed
log=$dir/output.log
code=
fail() {
    echo "runyard: $1" >> "$log"
    code=125
}
work=
cwd=
forward=
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    case $1 in
    --copy)
        work=$3
        if [ -z "$code" ]; then
            # cp -p keeps modes and times, and GNU cp clones each file where the file system
            # can (btrfs, XFS); elsewhere it copies as fast as a tar pipe (bench/workdir.py); then
            # the copy is the run's own to write, unlike the snapshot it came from
            { mkdir -p "$work" && cp -R -p "$2/." "$work/" && chmod -R u+w "$work"; } \
                2>> "$log" || fail "cannot make the work directory $work from $2"
        fi
        shift 3
        ;;
    --link)
        if [ -z "$code" ]; then
            place=$work/$3
            if [ ! -e "$2" ]; then
                fail "data $2 is missing (to appear at $3)"
            else
                { mkdir -p "$(dirname "$place")" && rm -rf "$place" && ln -s "$2" "$place"; } \
                    2>> "$log" || fail "cannot link data $2 at $3"
            fi
        fi
        shift 3
        ;;
    --cd)
        cwd=$2
        shift 2
        ;;
    --forward)
        forward=$2
        shift 2
        ;;
    *)
        fail "wrapper: unknown option $1"
        shift
        ;;
    esac
done
shift
if [ -n "$code" ]; then
    :
elif ! cd "$cwd" 2>> "$log"; then
    fail "cannot enter working directory $cwd"
elif [ -n "$forward" ]; then
    # The command runs in the background so that a trap can pass the signal on while it runs
    # (POSIX then has it start with SIGINT ignored: batch jobs are not stopped by ^C). A trapped
    # signal ends `wait` early with a status above 128 while the command lives on: wait again.
    "$@" >> "$log" 2>&1 < /dev/null &
    child=$!
    trap 'kill -s "$forward" "$child" 2>/dev/null' "$forward"
    while :; do
        wait "$child"
        code=$?
        if [ "$code" -le 128 ] || ! kill -0 "$child" 2>/dev/null; then
            break
        fi
    done
else
    "$@" >> "$log" 2>&1 < /dev/null
    code=$?
fi
echo "$code" > "$dir/exit_code"
