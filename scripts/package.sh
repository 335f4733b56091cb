#!/usr/bin/env bash
# Builds the Function App package, dist/lakebackup-functionapp.zip, and checks it:
# - a release binary for x86_64 Linux that needs glibc 2.28 at most (cargo-zigbuild with Zig,
#   both from PyPI, in a venv of their own), so it runs on every image the Functions host uses;
# - the highest GLIBC_ symbol version it needs, and that it runs (`--version`) here and against
#   Debian bullseye's glibc 2.31 (its libc6 and libgcc-s1 packages from deb.debian.org, loaded
#   with bullseye's own dynamic loader, the host's library cache ignored: no root needed);
# - the zip holds exactly host.json, each function folder (function.json and its ADF artifacts)
#   and the binary, executable.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=x86_64-unknown-linux-gnu
MAX_GLIBC=2.28
ZIP=dist/lakebackup-functionapp.zip

python3 -m venv target/package-venv
target/package-venv/bin/pip install --quiet "ziglang==0.17.*" "cargo-zigbuild==0.24.*"
export PATH="$PWD/target/package-venv/bin:$PATH"
cargo zigbuild --locked --release --target "$TARGET.$MAX_GLIBC"
binary="target/$TARGET/release/lakebackup"

needed=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
if [ "$(printf '%s\n%s\n' "$needed" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
  echo "package: the binary needs glibc $needed, more than $MAX_GLIBC" >&2
  exit 1
fi
echo "package: the binary needs glibc $needed at most"
"$binary" --version

# Run it against bullseye's glibc 2.31.
old_root=target/package-bullseye
if [ ! -x "$old_root/lib/x86_64-linux-gnu/libc.so.6" ]; then
  rm -rf "$old_root" && mkdir -p "$old_root"
  python3 - "$old_root" <<'PY'
import lzma, sys, urllib.request
root = sys.argv[1]
mirror = "http://deb.debian.org/debian"
index = lzma.decompress(urllib.request.urlopen(f"{mirror}/dists/bullseye/main/binary-amd64/Packages.xz").read()).decode()
wanted = {"libc6", "libgcc-s1"}
for stanza in index.split("\n\n"):
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" "))
    if fields.get("Package") in wanted:
        wanted.discard(fields["Package"])
        path = f"{root}/{fields['Package']}.deb"
        urllib.request.urlretrieve(f"{mirror}/{fields['Filename']}", path)
        print(f"package: fetched {fields['Package']} {fields['Version']}")
if wanted:
    sys.exit(f"package: not in bullseye's index: {wanted}")
PY
  for deb in "$old_root"/*.deb; do dpkg-deb -x "$deb" "$old_root"; done
fi
libs="$old_root/lib/x86_64-linux-gnu"
loader=("$libs/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$libs:$old_root/usr/lib/x86_64-linux-gnu")
# Every library it loads must come from the bullseye tree, none from this machine.
resolved=$("${loader[@]}" --list "$binary")
echo "$resolved"
if echo "$resolved" | grep '=>' | grep -v "=> $old_root/" | grep -q .; then
  echo "package: a library resolved outside the bullseye tree" >&2
  exit 1
fi
"${loader[@]}" "$binary" --version
echo "package: runs with Debian bullseye's glibc ($(basename "$(readlink -f "$libs/libc.so.6")"))"

# Lay out the Function App and zip it (Python's zipfile keeps the binary's executable bit).
rm -rf dist && mkdir -p dist
python3 - "$binary" "$ZIP" <<'PY'
import os, sys, zipfile
binary, out = sys.argv[1], sys.argv[2]
functions = sorted(d for d in os.listdir(".") if os.path.isfile(os.path.join(d, "function.json")))
entries = [("host.json", "host.json", 0o644)]
for function in functions:
    for folder, _, files in os.walk(function):
        for name in sorted(files):
            path = os.path.join(folder, name)
            entries.append((path, path, 0o644))
entries.append((binary, "lakebackup", 0o755))
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
    for source, name, mode in entries:
        info = zipfile.ZipInfo.from_file(source, name)
        info.external_attr = (0o100000 | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(source, "rb") as f:
            archive.writestr(info, f.read())
# Check what went in: exactly these files, the binary executable.
with zipfile.ZipFile(out) as archive:
    names = sorted(i.filename for i in archive.infolist())
    expected = sorted(name for _, name, _ in entries)
    assert names == expected, (names, expected)
    assert set(functions) == {
        "HttpSnapshotIncBackupContainerProducer", "HttpSnapshotIncBackupStorageReconciliation",
        "QueueBlobEvents", "QueueCreateBlobBackupADFv2", "QueueSnapshotBackupShard",
    }, functions
    mode = archive.getinfo("lakebackup").external_attr >> 16
    assert mode & 0o111, oct(mode)
    print(f"package: {out}: {len(names)} files")
    for name in names:
        print(f"  {name}")
PY
