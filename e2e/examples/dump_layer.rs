//! Writes the uncompressed tars of the multi-layer image to a directory, for inspection
//! with GNU tar: `cargo run -p e2e --example dump_layer -- DIR`.

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: dump_layer DIR"))?;
    let layers = [
        e2e::images::busybox_layer()?,
        e2e::images::multi_layer_adds(),
        e2e::images::multi_layer_changes(),
        e2e::images::multi_layer_recreates(),
    ];
    for (i, layer) in layers.iter().enumerate() {
        std::fs::write(format!("{dir}/layer-{i}.tar"), layer.tar_bytes()?)?;
    }
    Ok(())
}
