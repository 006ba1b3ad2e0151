# Runyard run wrapper (POSIX sh): runs one command in its own session and leaves its story in
# ATTEMPT_DIR: `pid` first, all output in `output.log`, and `exit_code` last (temp file + rename).
# usage: sh wrapper.sh ATTEMPT_DIR WORKING_DIR COMMAND [ARG...]
dir=$1
cwd=$2
shift 2
# A TERM, INT or HUP sent to the whole process group is for the command; the wrapper lives on to
# record how it ended. (A trapped signal is reset to its default in the command it runs.)
trap ':' TERM INT HUP
echo "$$" > "$dir/pid"  # the daemon also has the pid from the spawn; no rename needed
if cd "$cwd" 2>> "$dir/output.log"; then
    "$@" >> "$dir/output.log" 2>&1 < /dev/null
    code=$?
else
    echo "runyard: cannot enter working directory $cwd" >> "$dir/output.log"
    code=125
fi
echo "$code" > "$dir/exit_code.tmp" && mv -f "$dir/exit_code.tmp" "$dir/exit_code"
