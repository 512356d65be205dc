//! Every input the build must refuse, refused before anything is written.

use crate::{build, config};
use nacre_tests::{bin, nacre, temp_dir};
use std::path::PathBuf;

#[test]
fn bad_inputs_are_refused_before_anything_is_written() {
    let dir = temp_dir("image-bad");
    let out = dir.join("never.eif");
    let refused = |cfg: PathBuf, extra: &[&str], expect: &[&str]| {
        let (ok, _, err) = build(&cfg, &out, extra);
        assert!(!ok, "built with {cfg:?}");
        for e in expect {
            assert!(err.contains(e), "{e:?} not in: {err}");
        }
        assert!(
            !out.exists() && !dir.join("never.pcrs.json").exists(),
            "something was written"
        );
    };
    let dynamic = bin("nacre-runtime").display().to_string();
    refused(
        config(&dir, |c| {
            c["binaries"]
                .as_table_mut()
                .unwrap()
                .insert("runtime".into(), dynamic.clone().into());
        }),
        &[],
        &["dynamically linked", &dynamic, "scripts/image-binaries"],
    );
    refused(
        config(&dir, |c| {
            c["image"]
                .as_table_mut()
                .unwrap()
                .insert("memory_mib".into(), 64.into());
        }),
        &[],
        &["memory_mib", "image.toml", "is 64"],
    );
    let fake = dir.join("fake.deb");
    std::fs::write(&fake, b"!<arch>\nnot a kernel").unwrap();
    refused(
        config(&dir, |_| {}),
        &["--kernel-deb", fake.to_str().unwrap()],
        &["fake.deb", "SHA-256", "pins"],
    );
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    refused(
        config(&dir, |c| {
            c.insert(
                "guest".into(),
                toml::Value::Array(vec![
                    toml::toml! { name = "core" file = (core.display().to_string()) }.into(),
                ]),
            );
        }),
        &[],
        &["--guest core", "core.wasm", "not a component"],
    );
    refused(
        config(&dir, |c| {
            c.insert("runtime".into(), toml::toml! { args = ["--listen", "tcp://127.0.0.1:8443", "--fqdn", "localhost", "--attestation", "dev"] }.into());
        }),
        &[],
        &["refuses the image's [runtime] args", "--dev-root"],
    );
    refused(
        config(&dir, |c| {
            c["image"]
                .as_table_mut()
                .unwrap()
                .insert("memroy_mib".into(), 1.into());
        }),
        &[],
        &["image.toml", "memroy_mib"],
    );
    let empty_cache = dir.join("cache");
    refused(
        config(&dir, |c| {
            c["kernel"].as_table_mut().unwrap().insert(
                "package".into(),
                "linux-image-0.0.0-nacre-none-amd64".into(),
            );
        }),
        &["--cache", empty_cache.to_str().unwrap()],
        &["linux-image-0.0.0-nacre-none-amd64", "apt-get"],
    );

    // describe: a truncated EIF, a file that is not one.
    let cfg = config(&dir, |_| {});
    let good = dir.join("good.eif");
    let (ok, _, err) = build(&cfg, &good, &[]);
    assert!(ok, "{err}");
    let cut = dir.join("cut.eif");
    std::fs::write(&cut, &std::fs::read(&good).unwrap()[..3000]).unwrap();
    let (ok, _, err) = nacre(&["image", "describe", cut.to_str().unwrap()]);
    assert!(
        !ok && err.contains("cut.eif") && err.contains("truncated"),
        "{err}"
    );
    let foreign = dir.join("foreign.eif");
    std::fs::write(&foreign, vec![0x5a; 8192]).unwrap();
    let (ok, _, err) = nacre(&["image", "describe", foreign.to_str().unwrap()]);
    assert!(
        !ok && err.contains("foreign.eif") && err.contains("not an enclave image"),
        "{err}"
    );
}
