//! `just bench`: docs/design.md section 11's performance targets on the local real
//! cluster, one table; the measurements are in `dnspolicy_e2e::bench`.

use clap::Parser;
use dnspolicy_e2e::bench;

fn main() {
    let cli = bench::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio");
    let code = rt.block_on(bench::main(cli));
    std::process::exit(code);
}
