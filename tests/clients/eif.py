#!/usr/bin/env python3
"""An EIF reader written apart from Nacre's Rust and the Nitro crate.

    eif.py pcrs FILE         prints {"PCR0": …, "PCR1": …, "PCR2": …, "IsCrcValid": …}
    eif.py extract FILE DIR  writes DIR/kernel, DIR/cmdline, DIR/initrd (the
                             ramdisks in order, as a boot loader hands them over)

The tests check that its PCRs agree with `nacre image build` and
`describe`, and QEMU boots what `extract` takes out of an image.

The format: a big-endian header (magic ".eif", version, flags, default
memory and CPUs, section count, 32 offsets, 32 sizes, unused, CRC-32 of
everything but the CRC field), then sections, each a header (type, flags,
size) and its bytes. PCRs are SHA-384 "extends" from 48 zero bytes of
SHA-384 over: kernel, command line and every ramdisk (PCR0); kernel,
command line and the first ramdisk (PCR1); the other ramdisks (PCR2).
"""
import hashlib
import json
import os
import struct
import sys
import zlib

HEADER = struct.Struct(">4sHHQQHH32Q32QII")
SECTION = struct.Struct(">HHQ")
KERNEL, CMDLINE, RAMDISK, SIGNATURE, METADATA = 1, 2, 3, 4, 5


def sections(data):
    if len(data) < HEADER.size or data[:4] != b".eif":
        raise SystemExit("not an EIF (no .eif header)")
    fields = HEADER.unpack_from(data)
    count, crc = fields[6], fields[-1]
    at, found, running = HEADER.size, [], zlib.crc32(data[: HEADER.size - 4])
    while at < len(data):
        kind, _flags, size = SECTION.unpack_from(data, at)
        body = data[at + SECTION.size : at + SECTION.size + size]
        if len(body) != size:
            raise SystemExit(f"section {len(found)} is truncated")
        running = zlib.crc32(data[at : at + SECTION.size + size], running)
        found.append((kind, body))
        at += SECTION.size + size
    if len(found) != count:
        raise SystemExit(f"header names {count} sections, file holds {len(found)}")
    return found, running == crc


def extend(parts):
    inner = hashlib.sha384()
    for p in parts:
        inner.update(p)
    return hashlib.sha384(bytes(48) + inner.digest()).hexdigest()


def pcrs(path):
    with open(path, "rb") as f:
        found, crc_ok = sections(f.read())
    boot = [b for k, b in found if k in (KERNEL, CMDLINE)]
    ramdisks = [b for k, b in found if k == RAMDISK]
    return {
        "PCR0": extend(boot + ramdisks),
        "PCR1": extend(boot + ramdisks[:1]),
        "PCR2": extend(ramdisks[1:]),
        "IsCrcValid": crc_ok,
    }


def extract(path, out):
    with open(path, "rb") as f:
        found, crc_ok = sections(f.read())
    if not crc_ok:
        raise SystemExit("bad CRC")
    os.makedirs(out, exist_ok=True)
    pick = lambda kind: b"".join(b for k, b in found if k == kind)
    for name, kind in (("kernel", KERNEL), ("cmdline", CMDLINE), ("initrd", RAMDISK)):
        with open(os.path.join(out, name), "wb") as f:
            f.write(pick(kind))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "pcrs":
        print(json.dumps(pcrs(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "extract":
        extract(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
