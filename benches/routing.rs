//! Micro benchmarks of the per-session decisions before the upstream
//! connect: the route lookup with 1,000 routes, and the balancer's pick.
//!
//! Three route tables of 1,000 routes each, built from YAML like a real
//! config:
//! - `exact_hosts`: one route per tenant host (`tenant-N.example.com`), the
//!   common multi-tenant shape; the lookup is a hash of the host;
//! - `wildcard_hosts`: 1,000 `*.zone-N.example.com` routes; the lookup walks
//!   the suffixes, longest first, so the last zone is the worst case;
//! - `path_prefixes`: 1,000 prefixes (`/app-N`) without a host; the lookup
//!   walks the prefixes, longest first, so a miss (404) is the worst case.
//!
//! Run with `cargo bench --bench routing`; criterion prints the time per
//! lookup and per pick.

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use wsgate::balance::Pools;
use wsgate::config::Config;
use wsgate::route::RouteTable;

const ROUTES: usize = 1000;

/// A config with `ROUTES` routes, each written by `route(n)`, all to one
/// backend of `servers` servers.
fn config(route: impl Fn(usize) -> String, servers: usize) -> Config {
    let mut yaml = String::from("listeners:\n  - bind: \"127.0.0.1:0\"\nroutes:\n");
    for n in 0..ROUTES {
        yaml.push_str(&route(n));
    }
    yaml.push_str("backends:\n  b:\n    servers:\n");
    for n in 0..servers {
        yaml.push_str(&format!("      - url: \"ws://127.0.0.1:{}\"\n", 9000 + n));
    }
    Config::from_yaml(&yaml, "bench.yaml").expect("bench config is valid")
}

fn route_lookup(c: &mut Criterion) {
    let exact = RouteTable::new(&config(
        |n| format!("  - host: tenant-{n}.example.com\n    path_prefix: /ws\n    backend: b\n"),
        1,
    ));
    let wildcard = RouteTable::new(&config(
        |n| format!("  - host: \"*.zone-{n}.example.com\"\n    path_prefix: /\n    backend: b\n"),
        1,
    ));
    let prefixes = RouteTable::new(&config(
        |n| format!("  - path_prefix: /app-{n}\n    backend: b\n"),
        1,
    ));
    let last = ROUTES - 1;
    let tenant = format!("tenant-{last}.example.com:443");
    let zone = format!("a.zone-{last}.example.com");
    let app = format!("/app-{last}/room");

    let mut group = c.benchmark_group("route_lookup_1000");
    group.bench_function("exact_hosts", |b| {
        b.iter(|| {
            let route = exact.lookup(black_box(Some(tenant.as_str())), black_box("/ws"));
            assert!(route.is_some());
        })
    });
    group.bench_function("wildcard_hosts_last", |b| {
        b.iter(|| {
            let route = wildcard.lookup(black_box(Some(zone.as_str())), black_box("/chat"));
            assert!(route.is_some());
        })
    });
    group.bench_function("path_prefixes_last", |b| {
        b.iter(|| {
            let route = prefixes.lookup(black_box(Some("example.com")), black_box(app.as_str()));
            assert!(route.is_some());
        })
    });
    group.bench_function("path_prefixes_miss", |b| {
        b.iter(|| {
            let route = prefixes.lookup(black_box(Some("example.com")), black_box("/nowhere"));
            assert!(route.is_none());
        })
    });
    group.finish();
}

fn balancer_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balancer_pick");
    for servers in [1, 10, 100] {
        let pools = Pools::new(&config(
            |n| format!("  - path_prefix: /r{n}\n    backend: b\n"),
            servers,
        ));
        let pool = pools.get(0).expect("one backend");
        group.bench_function(format!("round_robin_{servers}_servers"), |b| {
            b.iter(|| black_box(pool.attempts().next()).is_some())
        });
    }
    group.finish();
}

criterion_group!(benches, route_lookup, balancer_pick);
criterion_main!(benches);
