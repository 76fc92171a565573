//! Operating-system limits a large run runs into: file descriptors and
//! local ports. Checked before the first connection so that a run either
//! can open all its connections or says at once why not.

use super::error::BenchError;

/// Descriptors kept free for everything that is not a connection (the
/// runtime, stdio, the CA file, `/proc` reads).
const FD_MARGIN: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit if it can, and fails
/// if `connections` connections (plus a margin) still do not fit.
pub(crate) fn check_fds(connections: usize, threads: usize) -> Result<(), BenchError> {
    let needed = connections as u64 + FD_MARGIN + 4 * threads as u64;
    let resource = rlimit::Resource::NOFILE;
    let Ok((soft, hard)) = resource.get() else {
        return Ok(());
    };
    let limit = if soft < hard {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(new) => new,
            // An unlimited hard limit cannot be set as the soft one; try
            // just what is needed.
            Err(_) => rlimit::increase_nofile_limit(needed).unwrap_or(soft),
        }
    } else {
        soft
    };
    if needed > limit {
        return Err(BenchError::FdLimit {
            connections,
            needed,
            limit,
            hard,
        });
    }
    Ok(())
}

/// The number of local ports the kernel hands out per source address
/// (`net.ipv4.ip_local_port_range`), if it can be read.
fn local_ports() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    (hi >= lo).then(|| hi - lo + 1)
}

/// Fails if `connections` to one target need more local ports per source
/// address than the kernel has. `sources` is the number of source
/// addresses (0 means the OS picks one).
pub(crate) fn check_ports(connections: usize, sources: usize) -> Result<(), BenchError> {
    let Some(ports) = local_ports() else {
        return Ok(());
    };
    let spread = sources.max(1);
    let per_source = connections.div_ceil(spread);
    if per_source as u64 > ports {
        let suggest = connections.div_ceil(ports.max(1) as usize) + 1;
        return Err(BenchError::Ports {
            connections,
            sources: spread,
            per_source,
            ports,
            suggest,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_runs_fit() {
        check_fds(10, 1).unwrap();
        check_ports(10, 0).unwrap();
    }

    #[test]
    fn impossible_runs_are_refused_with_a_reason() {
        let e = check_fds(usize::MAX / 2, 1).unwrap_err();
        assert!(e.to_string().contains("file descriptors"), "{e}");
        if local_ports().is_some() {
            let e = check_ports(10_000_000, 1).unwrap_err();
            assert!(e.to_string().contains("--source-ips"), "{e}");
        }
    }
}
