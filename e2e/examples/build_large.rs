//! Builds (or loads from the cache) the `large` test image and prints its layers:
//! `cargo run -p e2e --example build_large`.

fn main() -> anyhow::Result<()> {
    let start = std::time::Instant::now();
    let image = e2e::images::large_image()?;
    let mut total = 0;
    for layer in &image.layers {
        let uncompressed: u64 = layer.entries.iter().map(e2e::images::TarEntry::size).sum();
        total += uncompressed;
        eprintln!(
            "{} {} bytes (contents {uncompressed}), {} entries",
            layer.digest,
            layer.size,
            layer.entries.len()
        );
    }
    eprintln!(
        "large: {} layers, {total} bytes of contents, ready in {:?}",
        image.layers.len(),
        start.elapsed()
    );
    Ok(())
}
