//! `pgtransit-bench --verify [--scale N]`: `verify --mode checksum` against a plain
//! sequential scan of the same table on both servers at once (the floor any row-by-row
//! comparison has to read). The bar: checksum at least half the scan's speed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use pgsandbox::Cluster;

const DB: &str = "verify";

/// The median of three runs (single runs here vary by a factor of up to two).
fn timed(f: impl Fn()) -> f64 {
    let mut v: Vec<f64> = (0..3)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[1]
}

pub fn run(bin: &Path, source: &Cluster, target: &Cluster, scale: u32) -> String {
    for c in [source, target] {
        c.create_database(DB).unwrap();
        // pgbench's accounts are deterministic: both sides get the same rows.
        let out = Command::new(c.client_program("pgbench"))
            .args(["-i", "-q", "-s", &scale.to_string(), "-h"])
            .arg(c.socket_dir())
            .args(["-p", &c.port().to_string(), "-U", "postgres", DB])
            .output()
            .unwrap();
        assert!(out.status.success(), "pgbench -i");
        c.psql(DB, "VACUUM ANALYZE pgbench_accounts").unwrap();
    }
    let rows = scale as u64 * 100_000;
    let size = source
        .psql(
            DB,
            "SELECT pg_size_pretty(pg_table_size('pgbench_accounts'))",
        )
        .unwrap();
    // Warm both caches the same way for both measurements.
    let scan = || {
        std::thread::scope(|s| {
            for c in [source, target] {
                s.spawn(move || c.psql(DB, "SELECT count(*) FROM pgbench_accounts").unwrap());
            }
        })
    };
    scan();
    let scan_s = timed(scan);
    // Reading every row out, as any comparison from outside the server must.
    let copy_s = timed(|| {
        std::thread::scope(|s| {
            for c in [source, target] {
                s.spawn(move || c.psql(DB, "COPY pgbench_accounts TO '/dev/null'").unwrap());
            }
        })
    });
    let (src, dst) = (source.url(DB), target.url(DB));
    let verify_s = timed(|| {
        let o = Command::new(bin)
            .args([
                "verify", "--source", &src, "--target", &dst, "--mode", "checksum",
            ])
            .args(["--tables", "public.pgbench_accounts", "--jobs", "2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    });
    let md = format!(
        "Checksum verify, same machine and sandboxes (2 cores), median of three runs: pgbench_accounts, {rows} rows ({}) \
         on each side.\n\n| method | time | rows/s |\n|---|---:|---:|\n\
         | sequential scan, both sides at once (`count(*)`, rows not even decoded) | {scan_s:.2} s | {:.0} |\n\
         | every row read out, both sides at once (`COPY ... TO '/dev/null'`) | {copy_s:.2} s | {:.0} |\n\
         | `pgtransit verify --mode checksum --jobs 2` | {verify_s:.2} s | {:.0} |\n\n\
         Checksum speed = {:.0}% of the count(*) scan's and {:.0}% of reading every row (the bar is 50% of \
         a plain sequential scan).\n",
        size.trim(),
        rows as f64 / scan_s,
        rows as f64 / copy_s,
        rows as f64 / verify_s,
        100.0 * scan_s / verify_s,
        100.0 * copy_s / verify_s
    );
    md
}
