//! Local IP addresses as operators write them: one address, or an inclusive
//! IPv4 range `FIRST-LAST`.
//!
//! Exists so that a backend's `source_addresses` and the bench's
//! `--source-ips` read the same way. Like [`units`](super::units), the
//! parser knows nothing about fields or lines (the validator adds those).

use std::net::{IpAddr, Ipv4Addr};

/// Reads one address (`10.0.0.2`, `::1`) or an inclusive range of IPv4
/// addresses (`10.0.0.2-10.0.0.9`) of at most `max` addresses.
pub fn parse_address_range(text: &str, max: u32) -> Result<Vec<IpAddr>, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let Some((first, last)) = text.split_once('-') else {
        return Err(format!(
            "{text:?} is neither an IP address nor a range such as 10.0.0.2-10.0.0.9"
        ));
    };
    let ipv4 = |part: &str| {
        part.trim().parse::<Ipv4Addr>().map(u32::from).map_err(|_| {
            format!(
                "{:?} is not an IPv4 address (ranges are IPv4 only)",
                part.trim()
            )
        })
    };
    let (first, last) = (ipv4(first)?, ipv4(last)?);
    if last < first {
        return Err(format!("the range {text:?} ends before it starts"));
    }
    if last - first >= max {
        return Err(format!("the range {text:?} has more than {max} addresses"));
    }
    Ok((first..=last)
        .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_addresses_and_ranges() {
        assert_eq!(
            parse_address_range(" 10.0.0.2 ", 10).unwrap(),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            parse_address_range("::1", 10).unwrap(),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
        let range = parse_address_range("10.0.0.254 - 10.0.1.1", 10).unwrap();
        let text: Vec<String> = range.iter().map(|ip| ip.to_string()).collect();
        assert_eq!(text, ["10.0.0.254", "10.0.0.255", "10.0.1.0", "10.0.1.1"]);
        assert_eq!(
            parse_address_range("10.0.0.1-10.0.0.1", 1).unwrap().len(),
            1
        );
    }

    #[test]
    fn bad_text_is_refused_with_a_reason() {
        for (text, reason) in [
            ("", "neither an IP address"),
            ("localhost", "neither an IP address"),
            ("10.0.0.300", "neither an IP address"),
            ("10.0.0.9-10.0.0.2", "ends before it starts"),
            ("::1-::2", "ranges are IPv4 only"),
            ("10.0.0.1-", "not an IPv4 address"),
            ("10.0.0.1-10.0.0.3", "more than 2 addresses"),
        ] {
            let error = parse_address_range(text, 2).unwrap_err();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }
}
