#!/usr/bin/env bash
# Builds the Function App package, dist/lakebackup-functionapp.zip, and checks it:
# - a release binary for x86_64 Linux that needs glibc 2.28 at most (cargo-zigbuild with Zig,
#   both from PyPI, in a venv of their own), so it runs on every image the Functions host uses;
# - the highest GLIBC_ symbol version it needs, and that it runs (`--version`) here and against
#   Debian bullseye's glibc 2.31 (its libc6 and libgcc-s1 packages from deb.debian.org, checked
#   as apt checks them — signed InRelease, Packages' hash, the .debs' hashes — and loaded with
#   bullseye's own dynamic loader, the host's library cache ignored: no root needed);
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
binary="${CARGO_TARGET_DIR:-target}/$TARGET/release/lakebackup"

needed=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
if [ "$(printf '%s\n%s\n' "$needed" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
  echo "package: the binary needs glibc $needed, more than $MAX_GLIBC" >&2
  exit 1
fi
echo "package: the binary needs glibc $needed at most"
"$binary" --version

# Run it against bullseye's glibc 2.31. The packages are checked as apt checks them: the suite's
# InRelease signed by a key of the Debian archive keyring (gpgv), Packages.xz by the SHA256 that
# signed file gives it, each .deb by the SHA256 and size Packages gives it. A tree from before
# that check (no `verified` mark) is fetched again.
old_root=target/package-bullseye
keyring="${DEBIAN_ARCHIVE_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}"
if [ ! -f "$old_root/verified" ]; then
  if ! command -v gpgv > /dev/null || [ ! -r "$keyring" ]; then
    echo "package: checking Debian's packages needs gpgv and the Debian archive keyring ($keyring):" \
      "apt-get install gpgv debian-archive-keyring, or set DEBIAN_ARCHIVE_KEYRING" >&2
    exit 1
  fi
  rm -rf "$old_root" && mkdir -p "$old_root"
  python3 - "$old_root" "$keyring" <<'PY'
import hashlib, lzma, os, subprocess, sys, tempfile, urllib.request
root, keyring = sys.argv[1], sys.argv[2]
mirror, suite, index = "http://deb.debian.org/debian", "bullseye", "main/binary-amd64/Packages.xz"

def fetch(path):
    with urllib.request.urlopen(f"{mirror}/{path}") as answer:
        return answer.read()

def check(what, data, sha256, size):
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"package: {what} does not match its SHA256 {sha256} and size {size}: refused")

def fields_of(stanza):
    fields, last = {}, None
    for line in stanza.splitlines():
        if line.startswith((" ", "\t")) and last:
            fields[last] += "\n" + line.strip()
        elif ": " in line or line.endswith(":"):
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    return fields

# 1. The Release file: only what the signature covers is read (gpgv writes it out).
with tempfile.TemporaryDirectory() as scratch:
    signed, release_path = os.path.join(scratch, "InRelease"), os.path.join(scratch, "Release")
    with open(signed, "wb") as f:
        f.write(fetch(f"dists/{suite}/InRelease"))
    done = subprocess.run(
        ["gpgv", "--status-fd", "1", "--keyring", keyring, "--output", release_path, signed],
        capture_output=True, text=True)
    signers = [line.split()[2] for line in done.stdout.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    if done.returncode != 0 or not signers:
        sys.exit(f"package: {suite}'s InRelease has no valid signature of the Debian archive keyring:\n{done.stderr}")
    with open(release_path, encoding="utf-8") as f:
        release = fields_of(f.read())
print(f"package: {suite} {release.get('Version')} InRelease signed by {', '.join(signers)}")
if release.get("Codename") != suite:
    sys.exit(f"package: the signed Release is for {release.get('Codename')!r}, not {suite}: refused")

# 2. Packages.xz, by the hash the signed Release gives it (fetched by that hash, as apt does).
listed = [line.split() for line in release.get("SHA256", "").splitlines() if len(line.split()) == 3]
sha256, size = next(((h, n) for h, n, name in listed if name == index), (None, None))
if sha256 is None:
    sys.exit(f"package: the signed Release lists no SHA256 for {index}")
by_hash = index.rsplit("/", 1)[0] + f"/by-hash/SHA256/{sha256}"
packages = fetch(f"dists/{suite}/{by_hash}")
check(index, packages, sha256, size)

# 3. Each .deb, by the SHA256 and size Packages gives it.
wanted = {"libc6", "libgcc-s1"}
for stanza in lzma.decompress(packages).decode().split("\n\n"):
    fields = fields_of(stanza)
    if fields.get("Package") in wanted:
        wanted.discard(fields["Package"])
        deb = fetch(fields["Filename"])
        check(fields["Filename"], deb, fields["SHA256"], fields["Size"])
        with open(f"{root}/{fields['Package']}.deb", "wb") as f:
            f.write(deb)
        print(f"package: fetched {fields['Package']} {fields['Version']}, SHA256 {fields['SHA256']}")
if wanted:
    sys.exit(f"package: not in {suite}'s index: {wanted}")
PY
  for deb in "$old_root"/*.deb; do dpkg-deb -x "$deb" "$old_root"; done
  touch "$old_root/verified"
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
