#!/usr/bin/env python3
"""An EIF reader written apart from Nacre's Rust and the Nitro crate.

    eif.py pcrs FILE         prints {"PCR0": …, "PCR1": …, "PCR2": …, "IsCrcValid": …}
                             and, for a signed image, "PCR8" and "SignatureValid"
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

A signed image has a signature section: a CBOR array of maps
{signing_certificate: PEM, signature: COSE_Sign1}, each an array of
byte values (serde's form of the Nitro crate's Vec<u8>). PCR8 is
the extend of the certificate's DER. The COSE_Sign1 signs the CBOR map
{register_index: 0, register_value: PCR0}; this reader checks that
payload against its own PCR0 and the signature with the system's
`openssl` (ECDSA over COSE's Sig_structure, RFC 9052 section 4.4).
"""
import hashlib
import json
import os
import base64
import struct
import subprocess
import sys
import tempfile
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


def cbor(data, at=0):
    """Decodes one CBOR item (the kinds a signature section uses)."""
    head = data[at]
    major, info, at = head >> 5, head & 31, at + 1
    if info < 24:
        n = info
    elif info <= 27:
        width = 1 << (info - 24)
        n, at = int.from_bytes(data[at : at + width], "big"), at + width
    else:
        raise ValueError(f"CBOR: unsupported length form {info}")
    if major == 0:
        return n, at
    if major == 1:
        return -1 - n, at
    if major in (2, 3):
        raw = data[at : at + n]
        return (raw if major == 2 else raw.decode()), at + n
    if major == 4:
        items = []
        for _ in range(n):
            item, at = cbor(data, at)
            items.append(item)
        return items, at
    if major == 5:
        pairs = {}
        for _ in range(n):
            key, at = cbor(data, at)
            pairs[key], at = cbor(data, at)
        return pairs, at
    if major == 6:  # a tag (COSE_Sign1 may carry 18): its item
        return cbor(data, at)
    raise ValueError(f"CBOR: unsupported major type {major}")


def cbor_head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | info]) + n.to_bytes(width, "big")


def der_integer(raw):
    raw = raw.lstrip(b"\0") or b"\0"
    if raw[0] & 0x80:
        raw = b"\0" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def signature(body, pcr0):
    """PCR8 and whether the signature over PCR0 verifies."""
    entries, _ = cbor(body)
    # serde writes the crate's Vec<u8> fields as arrays of integers.
    as_bytes = lambda v: bytes(v) if isinstance(v, list) else v
    pem = as_bytes(entries[0]["signing_certificate"])
    b64 = b"".join(l for l in pem.splitlines() if l and not l.startswith(b"-----"))
    pcr8 = extend([base64.b64decode(b64)])
    protected, _unprotected, payload, sig = cbor(as_bytes(entries[0]["signature"]))[0]
    info, _ = cbor(payload)
    if info.get("register_index") != 0 or as_bytes(info.get("register_value")) != bytes.fromhex(pcr0):
        return pcr8, False
    tbs = cbor_head(4, 4) + cbor_head(3, 10) + b"Signature1"
    for part in (protected, b"", payload):
        tbs += cbor_head(2, len(part)) + part
    half = len(sig) // 2
    seq = der_integer(sig[:half]) + der_integer(sig[half:])
    der = b"\x30" + (bytes([len(seq)]) if len(seq) < 128 else b"\x81" + bytes([len(seq)])) + seq
    digest = {96: "-sha384", 64: "-sha256", 132: "-sha512"}.get(len(sig), "-sha384")
    with tempfile.TemporaryDirectory() as d:
        files = {}
        for name, data in (("cert.pem", pem), ("tbs", tbs), ("sig", der)):
            files[name] = os.path.join(d, name)
            with open(files[name], "wb") as f:
                f.write(data)
        key = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "x509", "-in", files["cert.pem"], "-pubkey", "-noout", "-out", key], check=True)
        ok = subprocess.run(
            ["openssl", "dgst", digest, "-verify", key, "-signature", files["sig"], files["tbs"]],
            capture_output=True,
        ).returncode == 0
    return pcr8, ok


def pcrs(path):
    with open(path, "rb") as f:
        found, crc_ok = sections(f.read())
    boot = [b for k, b in found if k in (KERNEL, CMDLINE)]
    ramdisks = [b for k, b in found if k == RAMDISK]
    out = {
        "PCR0": extend(boot + ramdisks),
        "PCR1": extend(boot + ramdisks[:1]),
        "PCR2": extend(ramdisks[1:]),
        "IsCrcValid": crc_ok,
    }
    signed = [b for k, b in found if k == SIGNATURE]
    if signed:
        try:
            out["PCR8"], out["SignatureValid"] = signature(signed[0], out["PCR0"])
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as e:
            out["PCR8"], out["SignatureValid"] = None, False
            out["SignatureError"] = f"unreadable signature section: {e!r}"
    return out


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
