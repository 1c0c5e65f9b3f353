//! Who may use an export: its client list (`export.clients`, addresses and
//! CIDR ranges; empty = this machine only) and the privileged-port rule
//! (`export.secure`). Every call of every program is checked, so a machine
//! that is not listed gets a refusal its user can read (NFS4ERR_ACCESS,
//! NFS3ERR_ACCES, MNT3ERR_ACCES: "Permission denied") instead of a
//! connection that hangs its mount, and the operator gets one log line per
//! machine per minute saying why.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::rpc::complaints::Complaints;

/// One entry of a client list: an address (`10.0.0.5`, `::1`) or a range
/// in CIDR form (`192.168.1.0/24`, `fd00::/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRange {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for ClientRange {
    type Err = String;

    fn from_str(s: &str) -> Result<ClientRange, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let bits = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= bits => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {bits}")),
            },
        };
        let range = ClientRange {
            net: net.to_canonical(),
            prefix: if net.is_ipv6() && net.to_canonical().is_ipv4() {
                // ::ffff:a.b.c.d/120 is a.b.c.d/24.
                prefix.saturating_sub(96)
            } else {
                prefix
            },
        };
        if range.masked(range.net) != range.net {
            return Err(format!(
                "{s:?} has bits set past its prefix: did you mean {}/{}?",
                range.masked(range.net),
                range.prefix
            ));
        }
        Ok(range)
    }
}

impl fmt::Display for ClientRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = if self.net.is_ipv4() { 32 } else { 128 };
        if self.prefix == bits {
            write!(f, "{}", self.net)
        } else {
            write!(f, "{}/{}", self.net, self.prefix)
        }
    }
}

impl ClientRange {
    /// `ip` with the bits past this range's prefix cleared.
    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    /// Whether `ip` (an IPv4-mapped IPv6 address counts as IPv4) is in it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.net.is_ipv4() && self.masked(ip) == self.net
    }
}

/// Why a call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's address is in no range of `export.clients`.
    NotListed,
    /// `export.secure` asks for a source port below 1024.
    InsecurePort,
}

/// The machines an export serves.
#[derive(Debug, Clone, Default)]
pub struct ClientList {
    /// Empty: loopback addresses only.
    ranges: Vec<ClientRange>,
    secure: bool,
}

impl ClientList {
    /// Parses `export.clients`; the first bad entry is the error.
    pub fn parse(entries: &[String], secure: bool) -> Result<ClientList, String> {
        let ranges = entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<ClientRange>, String>>()?;
        Ok(ClientList { ranges, secure })
    }

    /// Whether only this machine may connect.
    pub fn loopback_only(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The list as `showmount -e` shows it.
    pub fn names(&self) -> Vec<String> {
        if self.ranges.is_empty() {
            return vec!["localhost".to_string()];
        }
        self.ranges.iter().map(|r| r.to_string()).collect()
    }

    /// Whether a call from `peer` is served. A call with no peer never
    /// crossed a network (the project's in-process tools): served.
    pub fn check(&self, peer: Option<SocketAddr>) -> Result<(), Refusal> {
        let Some(peer) = peer else {
            return Ok(());
        };
        let ip = peer.ip().to_canonical();
        let listed = if self.ranges.is_empty() {
            ip.is_loopback()
        } else {
            self.ranges.iter().any(|r| r.contains(ip))
        };
        if !listed {
            return Err(Refusal::NotListed);
        }
        if self.secure && peer.port() >= 1024 {
            return Err(Refusal::InsecurePort);
        }
        Ok(())
    }

    /// [`ClientList::check`], logging a refusal (once a minute per address
    /// and reason, with the count held back).
    pub fn admit(&self, peer: Option<SocketAddr>) -> Result<(), Refusal> {
        let verdict = self.check(peer);
        if let (Err(why), Some(peer)) = (verdict, peer) {
            let (what, detail) = match why {
                Refusal::NotListed => (
                    "refused a client not in export.clients",
                    format!("{} is not in {:?}", peer.ip(), self.names()),
                ),
                Refusal::InsecurePort => (
                    "refused a client on an unprivileged port (export.secure)",
                    format!("source port {} is not below 1024", peer.port()),
                ),
            };
            Complaints::global().warn(Some(peer.ip()), what, &detail);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> ClientList {
        let e: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
        ClientList::parse(&e, false).unwrap()
    }

    fn at(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn ranges_hold_their_addresses_and_no_others() {
        let l = list(&["192.168.1.0/24", "10.0.0.5", "fd00::/8"]);
        assert!(l.check(at("192.168.1.77:900")).is_ok());
        assert!(l.check(at("10.0.0.5:40000")).is_ok());
        assert!(l.check(at("[fd12::1]:40000")).is_ok());
        // IPv4-mapped: what a listener on [::] sees for an IPv4 client.
        assert!(l.check(at("[::ffff:192.168.1.9]:40000")).is_ok());
        for refused in ["192.168.2.1:1", "10.0.0.6:1", "127.0.0.1:1", "[fe80::1]:1"] {
            assert_eq!(l.check(at(refused)), Err(Refusal::NotListed), "{refused}");
        }
        assert!(list(&["0.0.0.0/0"]).check(at("203.0.113.9:5")).is_ok());
        assert!(list(&["0.0.0.0/0"]).check(at("[2001:db8::1]:5")).is_err());
    }

    #[test]
    fn an_empty_list_is_this_machine_only() {
        let l = list(&[]);
        assert!(l.loopback_only());
        assert!(l.check(at("127.0.0.1:5000")).is_ok());
        assert!(l.check(at("[::1]:5000")).is_ok());
        assert_eq!(l.check(at("192.168.1.2:5000")), Err(Refusal::NotListed));
        assert!(l.check(None).is_ok());
    }

    #[test]
    fn secure_asks_for_a_privileged_port() {
        let l = ClientList::parse(&["127.0.0.1".to_string()], true).unwrap();
        assert!(l.check(at("127.0.0.1:1023")).is_ok());
        assert_eq!(l.check(at("127.0.0.1:1024")), Err(Refusal::InsecurePort));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in ["10.0.0.0/33", "host.example", "10.0.0.1/24", "::1/129", ""] {
            let e = ClientList::parse(&[bad.to_string()], false).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let e = ClientList::parse(&["10.0.0.1/24".to_string()], false).unwrap_err();
        assert!(e.contains("10.0.0.0/24"), "{e}");
    }
}
