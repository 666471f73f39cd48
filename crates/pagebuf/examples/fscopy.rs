//! The standard library's copy, as `scripts/bench-copy.sh` compares `pagebuf copy` with:
//! `std::fs::copy` (on Linux `copy_file_range`, which on ext4 without reflinks the
//! kernel carries out through the page cache) and then `sync_all` on the copy, so the
//! bytes are on disk when it returns, as they are when `pagebuf copy` returns. Prints
//! `BYTES SECONDS MIB_PER_S` on one line.
//!
//! `cargo run --release -p pagebuf --example fscopy -- SRC DST`

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = &args[..] else {
        return Err("usage: fscopy SRC DST".into());
    };
    let started = Instant::now();
    let bytes = std::fs::copy(src, dst)?;
    std::fs::File::open(dst)?.sync_all()?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{bytes} {seconds:.3} {:.0}",
        bytes as f64 / seconds / (1 << 20) as f64
    );
    Ok(())
}
