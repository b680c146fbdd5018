#!/bin/sh
# Trim installed Python packages under DIR to what runs: no test suites, no C/Cython sources,
# headers or type stubs, extension modules stripped of symbols they do not need to load, and
# sourceless bytecode: every module of site-packages is byte-compiled to a legacy-layout
# module.pyc beside where module.py was (`compileall -b`, which Python imports without a source),
# then the .py sources and the __pycache__ directories are deleted (~30 MB of the step images).
# Only third-party packages: our own code (/app) keeps its sources. The trade-off: a traceback
# through a library names its file and line but cannot show the source line, and nothing can
# inspect.getsource() library code (no import path of numpy, scipy, scikit-learn or matplotlib
# does: the container tests run every step). A .py that does not compile is kept as it is.
# The .pyc are compiled by the interpreter of the image (same magic number) with file names as
# they will be at run time: ROOT is the directory that becomes / there, for a staged install
# (pip install --target /out/opt/venv/...; slim-packages /out /out), so tracebacks show
# /opt/venv/..., not the staging path. The wheels' vendored libraries (*.libs/, patched by
# auditwheel) are left alone: strip breaks their layout ("ELF load command address/offset not
# page-aligned"). Build stages only (needs binutils' strip). Measured: see benchmarks/RESULTS.md.
# Reproducible: hash-based .pyc headers (no source mtimes) and PYTHONHASHSEED=0 (the order of
# marshalled sets), so two builds write the same bytes.
#   images/base/slim-packages.sh DIR [ROOT]       e.g. slim-packages /opt/venv
set -eu
dir=$1
root=${2:-/}
python=${PYTHON:-python3}
export PYTHONHASHSEED=0
find "$dir" -type d -name tests -path '*/site-packages/*/tests' -prune -exec rm -rf {} +
find "$dir" -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.hpp' -o -name '*.pyx' \
     -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -path '*/site-packages/*' -delete
find "$dir" -type f -name '*.cpython-*.so' -path '*/site-packages/*' -exec strip --strip-unneeded {} +
# Sourceless bytecode, site-packages only.
compile() { "$python" -m compileall -q -b -j 0 --invalidation-mode checked-hash "$@" >/dev/null; }
find "$dir" -type d -name site-packages | while read -r site; do
  find "$site" -type d -name __pycache__ -prune -exec rm -rf {} +
  if [ "$root" = / ]; then
    compile "$site" || true  # a failure keeps its .py (below)
  else
    compile -s "$root" -p / "$site" || true
  fi
  # Delete a source only where its bytecode now exists.
  find "$site" -type f -name '*.py' -exec sh -c 'for f; do [ -f "${f}c" ] && rm -f "$f"; done; true' sh {} +
  find "$site" -type d -name __pycache__ -prune -exec rm -rf {} +
done
