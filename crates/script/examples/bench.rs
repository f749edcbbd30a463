//! Prints the script engine benchmark as JSON: `bench [SCRIPTS] [THREADS] [EVENTS_PER_SCRIPT]`.

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let scripts = args.first().copied().unwrap_or(2_000);
    let threads = args.get(1).copied().unwrap_or(2);
    let events = args.get(2).copied().unwrap_or(1_000);
    match script::bench(scripts, threads, events) {
        Ok(report) => println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default()),
        Err(e) => {
            eprintln!("bench failed: {e}");
            std::process::exit(1);
        }
    }
}
