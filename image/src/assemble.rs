//! `nacre image build`: from a configuration to an EIF and its PCRs.
//!
//! The first ramdisk (measured into PCR1 with the kernel) holds what boots
//! any Nacre image: the init, `/dev/console` and the kernel modules. The
//! second (PCR2) holds what this image serves: the runtime, its boot plan
//! (flags and environment), guests and files. Everything is checked
//! before anything is written.

use crate::config::{GuestEntry, ImageConfig};
use crate::eif::{self, Measurements, Parts};
use crate::ramdisk::{Node, Ramdisk};
use crate::signing::Signing;
use crate::{ImageError, checks, deb, kmod};
use nacre_init::{BootPlan, PLAN_PATH};
use std::path::PathBuf;

/// Where the runtime is in the image.
pub const RUNTIME_PATH: &str = "/nacre/bin/nacre-runtime";

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The TOML configuration.
    pub config: PathBuf,
    /// The kernel package, when already on this machine (else the cache,
    /// else `apt-get download`).
    pub kernel_deb: Option<PathBuf>,
    /// Where fetched kernel packages are kept.
    pub cache: PathBuf,
    /// The EIF to write.
    pub out: PathBuf,
    /// Signing for PCR8.
    pub signing: Option<Signing>,
}

/// A built image.
#[derive(Debug)]
pub struct Built {
    /// Its PCRs.
    pub measurements: Measurements,
    /// The EIF's size in bytes.
    pub eif_len: u64,
    /// The memory the configuration gives the enclave, checked to fit.
    pub memory_mib: u64,
}

/// Builds the image `options` describe.
pub fn build(options: &BuildOptions) -> Result<Built, ImageError> {
    let config = ImageConfig::load(&options.config)?;
    let inputs = read_inputs(&config)?;
    let kernel = kernel(&config, options)?;
    let ramdisks = ramdisks(inputs, kernel.modules)?;
    // The EIF is its parts plus headers of a few KiB: check the memory
    // before writing it.
    let eif_len = (kernel.image.len() + ramdisks.iter().map(Vec::len).sum::<usize>()) as u64 + 8192;
    checks::fits(eif_len, config.image.memory_mib, &options.config)?;
    let parts = Parts {
        kernel: &kernel.image,
        cmdline: &config.kernel.cmdline,
        ramdisks: &ramdisks,
        name: &config.image.name,
        version: &config.image.version,
        kernel_release: &kernel.release,
    };
    let measurements = eif::write(&parts, options.signing.as_ref(), &options.out)?;
    let eif_len = std::fs::metadata(&options.out)
        .map(|m| m.len())
        .unwrap_or(eif_len);
    Ok(Built {
        measurements,
        eif_len,
        memory_mib: config.image.memory_mib,
    })
}

/// Reads and checks what the image is made of, besides the kernel: the
/// binaries, the guests, the files and the runtime's flags (which the
/// runtime itself checks, with the guests' source files).
fn read_inputs(config: &ImageConfig) -> Result<Inputs, ImageError> {
    let read = crate::read_file;
    let init = read("the init ([binaries] init)", &config.binaries.init)?;
    checks::static_binary("the init", &config.binaries.init, &init)?;
    let runtime = read("the runtime ([binaries] runtime)", &config.binaries.runtime)?;
    checks::static_binary("the runtime", &config.binaries.runtime, &runtime)?;
    let mut guests = Vec::new();
    for g in &config.guests {
        guests.push((g.name.clone(), read("a guest ([[guest]] file)", &g.file)?));
    }
    let mut files = Vec::new();
    for f in &config.files {
        let mode = f.mode_bits().map_err(ImageError::Invalid)?;
        files.push((
            f.path.clone(),
            mode,
            read("a file ([[file]] source)", &f.source)?,
        ));
    }
    // The runtime checks its flags and compiles each guest from its file
    // here; inside the image the same guests are at /nacre/guests/.
    let with_guests = |file_of: &dyn Fn(&GuestEntry) -> Result<String, ImageError>| {
        let mut args = config.runtime.args.clone();
        for g in &config.guests {
            let options = g.options.as_deref().map(|o| format!(";{o}"));
            args.push("--guest".into());
            args.push(format!(
                "{}={}{}",
                g.name,
                file_of(g)?,
                options.unwrap_or_default()
            ));
        }
        Ok::<_, ImageError>(args)
    };
    let check_args = with_guests(&|g| {
        g.file
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| ImageError::Invalid(format!("guest {}'s path is not UTF-8", g.name)))
    })?;
    let args = with_guests(&|g| Ok(format!("/nacre/guests/{}.wasm", g.name)))?;
    checks::runtime_accepts(&config.binaries.runtime, &check_args)?;

    Ok(Inputs {
        init,
        runtime,
        guests,
        files,
        network: config.network.clone(),
        args,
        env: config.runtime.env.clone(),
        // The image's own module reads virtio_mmio's words.
        params_from: config
            .kernel
            .cmdline_devices
            .iter()
            .map(|_| (kmod::NAME.to_owned(), kmod::PARAMS_FROM.to_owned()))
            .collect(),
    })
}

/// The pinned kernel, its modules, and the image's own module when the
/// configuration asks for it.
fn kernel(config: &ImageConfig, options: &BuildOptions) -> Result<deb::Kernel, ImageError> {
    let deb_path = deb::obtain(
        &config.kernel.package(),
        "[kernel]",
        options.kernel_deb.as_deref(),
        &options.cache,
    )?;
    let mut kernel = deb::extract(&deb_path, &config.kernel)?;
    if let Some(devices) = &config.kernel.cmdline_devices {
        let module = kmod::build(devices, &kernel.release, &options.cache)?;
        // Right after the driver that binds to the devices it registers.
        let at = kernel
            .modules
            .iter()
            .position(|(file, _)| file.starts_with("virtio_mmio.ko"))
            .map_or(0, |i| i + 1);
        kernel
            .modules
            .insert(at, (format!("{}.ko", kmod::NAME), module));
    }

    Ok(kernel)
}

/// What the two ramdisks are made of, besides the kernel's modules.
struct Inputs {
    init: Vec<u8>,
    runtime: Vec<u8>,
    /// Name and component.
    guests: Vec<(String, Vec<u8>)>,
    /// Path under /nacre/files/, mode and contents.
    files: Vec<(String, u32, Vec<u8>)>,
    network: Option<nacre_init::Interface>,
    args: Vec<String>,
    env: std::collections::BTreeMap<String, String>,
    /// Modules that read another name's command-line words.
    params_from: std::collections::BTreeMap<String, String>,
}

/// The boot ramdisk (init, console, modules) and the application ramdisk
/// (runtime, plan, guests, files), compressed.
fn ramdisks(
    inputs: Inputs,
    kernel_modules: Vec<(String, Vec<u8>)>,
) -> Result<Vec<Vec<u8>>, ImageError> {
    let mut boot = Ramdisk::new();
    boot.file("init", 0o755, inputs.init);
    boot.add("dev/console", Node::CharDevice { major: 5, minor: 1 });
    for dir in ["proc", "sys", "tmp"] {
        boot.add(dir, Node::Dir);
    }
    let mut modules = Vec::new();
    for (file, bytes) in kernel_modules {
        let path = format!("/nacre/modules/{file}");
        boot.file(&path, 0o644, bytes);
        modules.push(path);
    }
    let mut app = Ramdisk::new();
    app.file(RUNTIME_PATH, 0o755, inputs.runtime);
    for (name, bytes) in inputs.guests {
        app.file(&format!("nacre/guests/{name}.wasm"), 0o644, bytes);
    }
    for (path, mode, bytes) in inputs.files {
        app.file(&format!("nacre/files/{path}"), mode, bytes);
    }
    let plan = BootPlan {
        modules,
        params_from: inputs.params_from,
        network: inputs.network,
        runtime: RUNTIME_PATH.into(),
        args: inputs.args,
        env: inputs.env,
    };
    let plan = serde_json::to_vec_pretty(&plan)
        .map_err(|e| ImageError::Invalid(format!("cannot write the boot plan: {e}")))?;
    app.file(PLAN_PATH, 0o644, plan);
    [boot, app]
        .iter()
        .map(|r| r.to_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ImageError::Invalid(format!("cannot assemble a ramdisk: {e}")))
}
