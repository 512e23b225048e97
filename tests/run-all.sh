#!/usr/bin/env bash
# Installs the dependencies, builds aigw and runs every test (unit, integration
# against real lighttpd/Apache/nginx, the openai SDK client tests, and the
# dashboard in a headless Chromium).
#   sudo tests/run-all.sh            # build and run make check
#   SANITIZERS=1 tests/run-all.sh    # the same built with ASan+UBSan
#   TSAN=1 tests/run-all.sh          # the same built with ThreadSanitizer
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ] && [ "${SKIP_SETUP:-0}" != 1 ]; then
    tests/setup-debian.sh
fi
[ -x configure ] || ./autogen.sh
flags=
if [ "${SANITIZERS:-0}" = 1 ]; then
    flags=--enable-sanitizers
    # An error in any worker fails the run (the fixtures read the servers' logs).
    export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [ "${TSAN:-0}" = 1 ]; then
    flags=--enable-tsan
    # A data race in any worker fails the run (the fixtures read the servers' logs).
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp"
fi
# Reconfigure when the build was made with other flags.
have=$( [ -x config.status ] && ./config.status --config | grep -o -- '--enable-sanitizers\|--enable-tsan' || true)
if [ ! -f Makefile ] || [ "$have" != "$flags" ]; then
    [ -f Makefile ] && make -s distclean >/dev/null 2>&1 || true
    ./configure -q $flags
fi
make -j"$(nproc)" -s
# Under the sanitizers the PostgreSQL pass keeps the limits and the peers'
# failure modes (test_multihost.py runs on PostgreSQL in every pass): the
# full set there would double the run.
if [ "${TSAN:-0}" = 1 ]; then
    # ThreadSanitizer is about the gateway's threads: the integration suites
    # load them; the Node tests (the SDKs, the browser) add nothing there
    # that the ASan pass and the plain one do not check.
    make -s check PG_SUITES="test_limits.py test_peers.py" NODE_TESTS=0
elif [ "${SANITIZERS:-0}" = 1 ]; then
    make -s check PG_SUITES="test_limits.py test_peers.py"
else
    make -s check
fi
