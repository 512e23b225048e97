#!/usr/bin/env bash
# tests/fuzz/run.sh - builds and runs aigw's libFuzzer targets (`make fuzz`).
#
# Each tests/fuzz/fuzz_*.c is linked with every app/*.c except main.c, built
# with clang's fuzzer, address and undefined-behaviour sanitizers. For each
# target the inputs kept under tests/fuzz/regressions/<target>/ are replayed
# first (each is a crash found earlier: it must not crash any more), then the
# target fuzzes for its share of FUZZ_SECONDS starting from a scratch copy of
# tests/fuzz/corpus/<target>/, so new inputs never land in the repository.
#
# Environment:
#   AIGW_SRCDIR     the source tree (default: two levels above this script)
#   FUZZ_SECONDS    total fuzzing time, split evenly over the targets (default 60)
#   FUZZ_TARGETS    space-separated subset of targets to build and run (default: all)
#   FUZZ_BUILD_DIR  where objects, binaries, scratch corpora and crash artifacts
#                   go (default: tests/fuzz/build, which git ignores)
#   FUZZ_JOBS       parallel compile jobs (default 2)
#   FUZZ_ALLOW_KNOWN  comma-separated ids of reported findings the harnesses
#                   may step over while their fixes are pending (see
#                   tests/fuzz/README.md); never set by make fuzz
#
# A crash is reproduced with the target binary and the input, e.g.
#   tests/fuzz/build/fuzz_sse tests/fuzz/regressions/fuzz_sse/<file>
# (FUZZ_SSE_DUMP=1 also prints what the relay sent the client).
#
# Installs nothing: without clang 14 and libFuzzer it stops and names the
# Debian packages to install. Exits non-zero when any target crashes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=${AIGW_SRCDIR:-$(cd "$here/../.." && pwd)}
fuzzdir=$src/tests/fuzz
build=${FUZZ_BUILD_DIR:-$fuzzdir/build}
seconds=${FUZZ_SECONDS:-60}
jobs=${FUZZ_JOBS:-2}
cc=clang-14
pkgs=(fcgi libcurl json-c sqlite3 libjwt libcrypto)

die() {
    echo "fuzz: $*" >&2
    exit 2
}

# --- tools -----------------------------------------------------------------
need_pkgs="apt-get install -y clang-14 libfuzzer-14-dev libclang-rt-14-dev"
command -v "$cc" >/dev/null 2>&1 ||
    die "$cc not found. On Debian 12 install it with: $need_pkgs"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' \
    >"$probe/p.c"
"$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >"$probe/log" 2>&1 ||
    die "$cc cannot link a libFuzzer target ($(head -c 300 "$probe/log")). On Debian 12 install: $need_pkgs"
command -v pkg-config >/dev/null 2>&1 || die "pkg-config not found (apt-get install -y pkg-config)"
for p in "${pkgs[@]}"; do
    pkg-config --exists "$p" ||
        die "pkg-config does not know $p; install the build dependencies (tests/setup-debian.sh)"
done
[[ $seconds =~ ^[0-9]+$ ]] || die "FUZZ_SECONDS must be a whole number of seconds, not '$seconds'"

# --- targets ------------------------------------------------------------------
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    targets=()
    for f in "$fuzzdir"/fuzz_*.c; do
        targets+=("$(basename "$f" .c)")
    done
fi
((${#targets[@]})) || die "no targets under $fuzzdir"
for t in "${targets[@]}"; do
    [[ -f $fuzzdir/$t.c ]] || die "no such target: $t ($fuzzdir/$t.c)"
done

# --- build ------------------------------------------------------------------
# The flags every object gets; the app's own objects are shared by all targets.
read -r -a dep_cflags <<<"$(pkg-config --cflags "${pkgs[@]}")"
read -r -a dep_libs <<<"$(pkg-config --libs "${pkgs[@]}")"
# configure passes the version in DEFS; take it from the same place.
version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$src/configure.ac")
[[ -n $version ]] || die "cannot read the version from AC_INIT in $src/configure.ac"
# shellcheck disable=SC2054 # the commas belong to -fsanitize
cflags=(-g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE
    -DPACKAGE_NAME='"aigw"' -DPACKAGE_VERSION="\"$version\"" -DVERSION="\"$version\""
    -iquote "$src/app" "${dep_cflags[@]}")
mkdir -p "$build/obj"

# Migrations are generated from sql/ (app/migrations.c may not exist in a
# fresh tree); they go to the build directory, never into app/.
sh "$src/app/gen-migrations.sh" "$src/sql/reports.sql" "$src"/sql/0*.sql >"$build/migrations.c.new"
if cmp -s "$build/migrations.c.new" "$build/migrations.c" 2>/dev/null; then
    rm -f "$build/migrations.c.new"
else
    mv "$build/migrations.c.new" "$build/migrations.c"
fi

app_srcs=()
for f in "$src"/app/*.c; do
    case $(basename "$f") in main.c | migrations.c) continue ;; esac
    app_srcs+=("$f")
done
app_srcs+=("$build/migrations.c")

# An object is rebuilt when its source, any app header or this script is newer.
stale=()
for f in "${app_srcs[@]}"; do
    o=$build/obj/$(basename "$f" .c).o
    if [[ ! -f $o || $f -nt $o ]] || [[ -n $(find "$src"/app/*.h "$0" -newer "$o" | head -n 1) ]]; then
        stale+=("$f")
    fi
done
if ((${#stale[@]})); then
    echo "fuzz: compiling ${#stale[@]} app sources with the sanitizers"
    # shellcheck disable=SC2016 # $1 and $@ belong to the inner sh
    printf '%s\n' "${stale[@]}" |
        xargs -P "$jobs" -I{} sh -c 'f=$1; shift; o=$1; shift; exec "$@" -c "$f" -o "$o/$(basename "$f" .c).o"' \
            sh {} "$build/obj" "$cc" "${cflags[@]}" ||
        die "compiling the app failed"
fi

# The objects a target links: all of the app's, except those a unity-build
# target includes itself (it names them in a line "// fuzz-unity: a.c b.c").
link_objs() {
    local t=$1 unity f skip
    unity=$(sed -n 's|^// fuzz-unity:||p' "$fuzzdir/$t.c")
    for f in "${app_srcs[@]}"; do
        skip=0
        for u in $unity; do [[ $(basename "$f") == "$u" ]] && skip=1; done
        ((skip)) || echo "$build/obj/$(basename "$f" .c).o"
    done
}

for t in "${targets[@]}"; do
    bin=$build/$t
    mapfile -t objs < <(link_objs "$t")
    if [[ ! -x $bin || $fuzzdir/$t.c -nt $bin || $fuzzdir/fuzz_common.h -nt $bin ]] ||
        [[ -n $(find "${objs[@]}" "$src"/app/*.c "$src"/app/*.h -newer "$bin" 2>/dev/null | head -n 1) ]]; then
        echo "fuzz: building $t"
        "$cc" "${cflags[@]}" -Wall -Wextra -o "$bin" "$fuzzdir/$t.c" "${objs[@]}" "${dep_libs[@]}" ||
            die "building $t failed"
    fi
done

# --- run ------------------------------------------------------------------
# UBSan reports must stop the run like ASan's do, or libFuzzer never sees them.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:symbolize=1}
# The interesting part of a crash log: the sanitizer's or the harness's
# report with the app's frames, without libFuzzer's own.
report() {
    awk '/ERROR: |FUZZ INVARIANT|runtime error:/ { on = 1 }
         on && /^SUMMARY:/ { print "    " $0; exit }
         on && !/fuzzer::|libc_start|_start \(|__sanitizer_print_stack_trace|PrintStackTrace|CrashCallback|rudimentary signal|Combine libFuzzer|^ *$/ {
             print "    " $0; if (++n >= 30) exit }' "$1"
}
# The last number a libFuzzer log gives for a statistic (empty when none).
stat_of() {
    sed -nE "s/.*$2.*/\1/p" "$1" | tail -n 1
}
per_target=$((seconds / ${#targets[@]}))
((per_target >= 1)) || per_target=1
fuzz_flags=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
failed=0
summary=()

for t in "${targets[@]}"; do
    bin=$build/$t
    logs=$build/logs
    mkdir -p "$logs" "$build/artifacts/$t"

    # Regressions: every input kept under regressions/<target>/ runs once.
    reg=()
    if [[ -d $fuzzdir/regressions/$t ]]; then
        for f in "$fuzzdir/regressions/$t"/*; do
            [[ -f $f ]] && reg+=("$f")
        done
    fi
    if ((${#reg[@]})); then
        bad=0
        for f in "${reg[@]}"; do
            if ! "$bin" "${fuzz_flags[@]}" "$f" >"$logs/$t.regression.log" 2>&1; then
                echo "fuzz: $t: regression input crashes: ${f#"$src"/}" >&2
                report "$logs/$t.regression.log" >&2
                bad=$((bad + 1))
            fi
        done
        if ((bad)); then
            summary+=("$(printf '%-14s regressions: %d of %d crash   result: FAIL' "$t" "$bad" "${#reg[@]}")")
            failed=1
            continue
        fi
    fi

    # Fuzz from a scratch copy of the seed corpus.
    work=$build/corpus/$t
    rm -rf "$work"
    mkdir -p "$work"
    if [[ -d $fuzzdir/corpus/$t ]]; then
        cp "$fuzzdir/corpus/$t"/* "$work"/ 2>/dev/null || true
    fi
    log=$logs/$t.log
    echo "fuzz: $t: ${#reg[@]} regression inputs pass; fuzzing for ${per_target}s (log: ${log#"$src"/})"
    rc=0
    "$bin" "${fuzz_flags[@]}" -max_total_time="$per_target" \
        -artifact_prefix="$build/artifacts/$t/" "$work" >"$log" 2>&1 || rc=$?

    runs=$(stat_of "$log" 'stat::number_of_executed_units: *([0-9]+)')
    speed=$(stat_of "$log" 'stat::average_exec_per_sec: *([0-9]+)')
    cov=$(stat_of "$log" 'cov: ([0-9]+)')
    ft=$(stat_of "$log" 'ft: ([0-9]+)')
    corp=$(stat_of "$log" 'corp: ([0-9]+)')
    if ((rc == 0)); then
        result=ok
    else
        failed=1
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        result="CRASH (exit $rc)"
        echo "fuzz: $t crashed; the report:" >&2
        report "$log" >&2
        if [[ -n $artifact ]]; then
            echo "fuzz: input kept as $artifact; after fixing, keep it as a regression test:" >&2
            echo "      cp $artifact $fuzzdir/regressions/$t/" >&2
        fi
    fi
    summary+=("$(printf '%-14s runs: %-9s exec/s: %-7s cov: %-6s ft: %-6s corpus: %-5s result: %s' \
        "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result")")
done

echo
echo "fuzz summary (${per_target}s per target):"
printf '  %s\n' "${summary[@]}"
exit "$failed"
