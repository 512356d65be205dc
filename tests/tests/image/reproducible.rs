//! Two builds byte-identical, their PCRs agreed by an independent reader.

use crate::{build, config, python_pcrs};
use nacre_tests::{nacre, temp_dir};

#[test]
fn the_image_is_reproducible_and_its_pcrs_agree_with_an_independent_reader() {
    let dir = temp_dir("image-pcrs");
    let cfg = config(&dir, |_| {});
    let (a, b) = (dir.join("a.eif"), dir.join("b.eif"));
    for eif in [&a, &b] {
        let (ok, out, err) = build(&cfg, eif, &[]);
        assert!(ok, "{err}");
        assert!(out.contains("\"PCR0\""), "{out}");
    }
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two builds differ"
    );
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a.pcrs.json")).unwrap()).unwrap();
    let theirs = python_pcrs(&a);
    for pcr in ["PCR0", "PCR1", "PCR2"] {
        assert_eq!(ours["Measurements"][pcr], theirs[pcr], "{pcr}");
    }
    assert_eq!(theirs["IsCrcValid"], true);
    let (ok, out, err) = nacre(&["image", "describe", a.to_str().unwrap()]);
    assert!(ok, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(described["Measurements"], ours["Measurements"]);

    // One flipped byte in a ramdisk: both readers see it.
    let mut bytes = std::fs::read(&a).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    let flipped = dir.join("flipped.eif");
    std::fs::write(&flipped, &bytes).unwrap();
    assert_eq!(python_pcrs(&flipped)["IsCrcValid"], false);
    let (ok, _, err) = nacre(&["image", "describe", flipped.to_str().unwrap()]);
    assert!(!ok && err.contains("CRC"), "{err}");
}
