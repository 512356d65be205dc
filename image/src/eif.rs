//! The EIF itself, written and read by `aws-nitro-enclaves-image-format`
//! (the code nitro-cli uses), with the checks that crate leaves out: it
//! panics on unreadable inputs and trusts a file's header, so every input
//! is checked here first and a file is walked section by section, within
//! its length, before the crate reads it.

use crate::ImageError;
use crate::signing::{self, Signing};
use aws_nitro_enclaves_image_format::defs::{
    EIF_MAGIC, EifBuildInfo, EifHeader, EifIdentityInfo, EifSectionHeader, EifSectionType,
    MAX_NUM_SECTIONS,
};
use aws_nitro_enclaves_image_format::utils::EifBuilder;
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// PCRs by name (`PCR0` …) and `HashAlgorithm`, as nitro-cli prints them.
pub type Measurements = BTreeMap<String, String>;

/// What goes into an EIF.
pub struct Parts<'a> {
    /// The bzImage.
    pub kernel: &'a [u8],
    /// The kernel's command line.
    pub cmdline: &'a str,
    /// Ramdisks in order: the first is measured into PCR1 with the kernel,
    /// the others into PCR2.
    pub ramdisks: &'a [Vec<u8>],
    /// Name and version for the metadata section.
    pub name: &'a str,
    /// See [`Parts::name`].
    pub version: &'a str,
    /// The kernel's release, for the metadata section.
    pub kernel_release: &'a str,
}

/// Writes the EIF to `out` (through a temporary file beside it, renamed
/// into place, so a failure leaves nothing half-written) and returns its
/// measurements.
pub fn write(
    parts: &Parts,
    signing: Option<&Signing>,
    out: &Path,
) -> Result<Measurements, ImageError> {
    let sign = signing.map(signing::load).transpose()?;
    if parts.cmdline.contains('\0') {
        return Err(ImageError::Invalid(
            "the kernel command line contains a NUL byte".into(),
        ));
    }
    let dir = tempfile::tempdir().map_err(|e| ImageError::write(std::env::temp_dir(), e))?;
    let put = |name: &str, bytes: &[u8]| -> Result<PathBuf, ImageError> {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).map_err(|e| ImageError::write(&path, e))?;
        Ok(path)
    };
    let kernel = put("kernel", parts.kernel)?;
    let info = EifIdentityInfo {
        img_name: parts.name.to_owned(),
        img_version: parts.version.to_owned(),
        build_info: EifBuildInfo {
            // No clock: the same inputs give the same file.
            build_time: "not recorded (reproducible build)".into(),
            build_tool: "nacre-image".into(),
            build_tool_version: env!("CARGO_PKG_VERSION").into(),
            img_os: "nacre".into(),
            img_kernel: parts.kernel_release.to_owned(),
        },
        docker_info: serde_json::json!({}),
        custom_info: serde_json::json!({}),
    };
    let mut builder = EifBuilder::new(
        &kernel,
        parts.cmdline.to_owned(),
        sign,
        sha2::Sha384::default(),
        0,
        info,
    );
    for (i, ramdisk) in parts.ramdisks.iter().enumerate() {
        builder.add_ramdisk(&put(&format!("ramdisk{i}"), ramdisk)?);
    }
    let partial = out.with_extension("eif.partial");
    let mut file = std::fs::File::create(&partial).map_err(|e| ImageError::write(&partial, e))?;
    let measurements = builder.write_to(&mut file);
    drop(file);
    if signing.is_some()
        && let Err(why) = signing::verify(&partial)
    {
        let _ = std::fs::remove_file(&partial);
        return Err(ImageError::Invalid(format!(
            "the signed image's signature does not verify ({why}); nothing was written"
        )));
    }
    std::fs::rename(&partial, out).map_err(|e| ImageError::write(out, e))?;
    Ok(measurements)
}

/// What `describe` finds in an EIF.
#[derive(Debug)]
pub struct Description {
    /// The measurements computed from the file's sections.
    pub measurements: Measurements,
    /// Whether the header's CRC matches the file.
    pub crc_ok: bool,
    /// The format's version.
    pub version: u16,
    /// Each section's kind and size, in file order.
    pub sections: Vec<(String, u64)>,
    /// The metadata section, when there is one.
    pub metadata: Option<serde_json::Value>,
    /// For a signed image, whether its signature verifies as nitro-cli
    /// checks it (and why not).
    pub signature: Option<Result<(), String>>,
}

/// Reads and measures any EIF, checking its structure first.
pub fn describe(path: &Path) -> Result<Description, ImageError> {
    let bad = |why: String| ImageError::Eif {
        path: path.to_owned(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| ImageError::read("the EIF", path, e))?;
    let sections = walk(&bytes).map_err(bad)?;
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    let name = path
        .to_str()
        .ok_or_else(|| bad("its path is not UTF-8".into()))?;
    let mut reader = EifReader::from_eif(name.to_owned()).map_err(bad)?;
    let measurements = reader.get_measurements().map_err(bad)?;
    let metadata = reader
        .get_metadata()
        .map(|m| serde_json::to_value(m).unwrap_or(serde_json::Value::Null));
    let signed = sections.iter().any(|(kind, _)| kind == "Signature");
    Ok(Description {
        measurements,
        crc_ok: reader.check_crc(),
        version,
        metadata,
        signature: signed.then(|| signing::verify(path)),
        sections,
    })
}

/// Checks the magic and that every section lies within the file.
fn walk(bytes: &[u8]) -> Result<Vec<(String, u64)>, String> {
    let len = bytes.len();
    if len < EifHeader::size() {
        return Err(format!(
            "it is {len} bytes, shorter than an EIF header ({}): the file is truncated or not an EIF",
            EifHeader::size()
        ));
    }
    if bytes[..4] != EIF_MAGIC {
        return Err("it does not start with \".eif\": not an enclave image file".into());
    }
    let header = EifHeader::from_be_bytes(&bytes[..EifHeader::size()])?;
    let count = usize::from(header.num_sections);
    if count == 0 || count > MAX_NUM_SECTIONS {
        return Err(format!(
            "its header names {count} sections (an EIF has 1 to {MAX_NUM_SECTIONS})"
        ));
    }
    let mut at = EifHeader::size() as u64;
    let mut sections = Vec::new();
    while at < len as u64 {
        let head_end = at + EifSectionHeader::size() as u64;
        if head_end > len as u64 {
            return Err(format!(
                "section {} at byte {at} has a cut header: the file is truncated",
                sections.len()
            ));
        }
        let head = EifSectionHeader::from_be_bytes(&bytes[at as usize..head_end as usize])?;
        let end = head_end.checked_add(head.section_size).filter(|&e| e <= len as u64).ok_or_else(|| {
            format!(
                "section {} ({:?}, {} bytes from byte {head_end}) ends past the file's {len} bytes: the file is truncated",
                sections.len(),
                head.section_type,
                head.section_size
            )
        })?;
        if matches!(head.section_type, EifSectionType::EifSectionInvalid) {
            return Err(format!("section {} has an invalid type", sections.len()));
        }
        sections.push((
            format!("{:?}", head.section_type)
                .trim_start_matches("EifSection")
                .to_owned(),
            head.section_size,
        ));
        at = end;
    }
    if sections.len() != count {
        return Err(format!(
            "its header names {count} sections but the file holds {}",
            sections.len()
        ));
    }
    Ok(sections)
}
