//! Time of one empty parallel region of the thread pool (fork and join), the fixed
//! cost each region of the forward pass pays: `cargo run --release -p tuili-backend
//! --example pool_latency`.

use std::time::Instant;
fn main() {
    let pool = tuili_backend::pool::ThreadPool::new(2);
    let n = 200_000;
    for _ in 0..1000 {
        pool.run(&|_, _| {});
    }
    let t0 = Instant::now();
    for _ in 0..n {
        pool.run(&|_, _| {});
    }
    println!(
        "{:.0} ns per empty region",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
}
