# Sourced by the fetch scripts (after `cd` to the repository and defining `die`): checks the
# tools named in "$@" and sets PIP to a pip command (pip3, pip, or python3 -m pip).
for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "\`$tool\` is needed (Debian: apt-get install -y coreutils $tool)"
done
PIP=""
for p in pip3 pip; do
    if command -v "$p" >/dev/null 2>&1; then PIP="$p"; break; fi
done
if [ -z "$PIP" ]; then
    if command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        PIP="python3 -m pip"
    else
        die "pip is needed (Debian: apt-get install -y python3-pip)"
    fi
fi
