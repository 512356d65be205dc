//! What the build refuses before writing anything: a binary the image's
//! bare root cannot run, flags or guests the runtime would refuse at
//! start, and an image too large for the memory the operator will give.

use crate::ImageError;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Endianness, elf};
use std::path::Path;
use std::process::Command;

/// The image has no dynamic loader and no libraries: each binary must be
/// a statically linked x86-64 ELF (no `PT_INTERP`).
pub fn static_binary(what: &str, path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let bad = |why: &str| {
        ImageError::Invalid(format!(
            "{what} {} {why}; build it with scripts/image-binaries",
            path.display()
        ))
    };
    let file =
        ElfFile64::<Endianness>::parse(bytes).map_err(|_| bad("is not a 64-bit ELF program"))?;
    let endian = file.endian();
    if file.elf_header().e_machine.get(endian) != elf::EM_X86_64 {
        return Err(bad("is not built for x86-64"));
    }
    if file
        .elf_program_headers()
        .iter()
        .any(|h| h.p_type(endian) == elf::PT_INTERP)
    {
        return Err(bad(
            "is dynamically linked (it names a loader), and the image has no libraries",
        ));
    }
    Ok(())
}

/// Runs `runtime --check` with the image's flags, its guests given by
/// their files on this machine: the runtime's own checks, so the build
/// refuses exactly what the enclave would refuse at start.
pub fn runtime_accepts(runtime: &Path, args: &[String]) -> Result<(), ImageError> {
    let out = Command::new(runtime)
        .arg("--check")
        .args(args)
        .env_clear()
        .output()
        .map_err(|e| {
            ImageError::Invalid(format!("cannot run {} --check: {e}", runtime.display()))
        })?;
    if out.status.success() {
        return Ok(());
    }
    Err(ImageError::Invalid(format!(
        "the runtime refuses the image's [runtime] args or guests: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The memory the enclave needs for an image of `eif_len` bytes: nitro-cli
/// asks for four times the EIF (it is loaded, then the ramdisks unpack
/// beside it), and the runtime needs room of its own.
pub fn memory_needed_mib(eif_len: u64) -> u64 {
    const RUNTIME_MIB: u64 = 256;
    (eif_len * 4).div_ceil(1 << 20) + RUNTIME_MIB
}

/// Refuses an image the configured memory cannot hold.
pub fn fits(eif_len: u64, memory_mib: u64, config: &Path) -> Result<(), ImageError> {
    let needed = memory_needed_mib(eif_len);
    if memory_mib < needed {
        return Err(ImageError::Invalid(format!(
            "the image is {} MiB: an enclave needs at least {needed} MiB for it (four times the image, plus 256 MiB for the runtime), but [image] memory_mib in {} is {memory_mib}; raise it",
            eif_len.div_ceil(1 << 20),
            config.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_rule_counts_four_images_and_the_runtime() {
        assert_eq!(memory_needed_mib(25 << 20), 100 + 256);
        assert!(fits(25 << 20, 356, Path::new("i.toml")).is_ok());
        let e = fits(25 << 20, 355, Path::new("i.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("356") && e.contains("i.toml") && e.contains("memory_mib"),
            "{e}"
        );
    }

    #[test]
    fn only_static_x86_64_programs_pass() {
        let me = std::env::current_exe().unwrap();
        let bytes = std::fs::read(&me).unwrap();
        // Test binaries link glibc dynamically.
        let e = static_binary("runtime", &me, &bytes)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        let e = static_binary("init", Path::new("x"), b"#!/bin/sh\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a 64-bit ELF") && e.contains("image-binaries"),
            "{e}"
        );
    }
}
