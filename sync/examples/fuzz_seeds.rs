//! Writes the fuzz target's seeds (valid messages of every kind) into the
//! directory given: `cargo run -p nacre-sync --example fuzz_seeds -- DIR`.

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| std::io::Error::other("usage: fuzz_seeds DIR"))?;
    std::fs::create_dir_all(&dir)?;
    for (i, seed) in nacre_sync::fuzzing::seeds().iter().enumerate() {
        std::fs::write(format!("{dir}/seed-{i}"), seed)?;
    }
    Ok(())
}
