//! Resource limits: CPUs, memory, processes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a limit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// the size has no number or an unknown unit
    #[error(
        "invalid size {0:?}: expected a number with an optional unit (k, m, g, t; e.g. 512m, 2g)"
    )]
    BadSize(String),
    /// the memory limit is below what a sandbox can start with
    #[error("memory limit {0} is too small: at least 16m is needed to start a sandbox")]
    MemoryTooSmall(ByteSize),
    /// the CPU count is not a positive number
    #[error("invalid CPU count {0:?}: expected a positive number such as 0.5, 1 or 4")]
    BadCpus(String),
    /// the process limit is not a positive integer
    #[error("invalid process limit {0:?}: expected a whole number of at least 16")]
    BadPids(String),
    /// the disk is too small to hold an image
    #[error("disk size {0} is too small: at least 1g is needed")]
    DiskTooSmall(ByteSize),
    /// more CPUs than the host has online
    #[error(
        "--cpus {asked} is more than this host's {host} online CPU(s); give at most --cpus {host}"
    )]
    CpusBeyondHost {
        /// What was asked.
        asked: Cpus,
        /// The host's online CPUs.
        host: u32,
    },
    /// more memory than the host has
    #[error(
        "--memory {asked} is more than this host's {host} of memory; give at most --memory {host}"
    )]
    MemoryBeyondHost {
        /// What was asked.
        asked: ByteSize,
        /// The host's memory (`MemTotal`).
        host: ByteSize,
    },
}

/// What the host has, to check limits against: a limit beyond it can never be reached and is
/// a slip (`--memory 100t` for `100g`). Zero means unknown (nothing is checked against it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostCapacity {
    /// CPUs online.
    pub cpus: u32,
    /// Memory in bytes (`MemTotal`).
    pub memory: u64,
}

/// A size in bytes, parsed from `512m`, `2G`, `1.5GiB`, `1048576`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = LimitsError;

    fn from_str(s: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadSize(s.to_owned());
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            _ => return Err(bad()),
        };
        let value: f64 = num.parse().map_err(|_| bad())?;
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(bad());
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("T", 1 << 40),
            ("G", 1 << 30),
            ("M", 1 << 20),
            ("K", 1 << 10),
        ];
        for (u, m) in UNITS {
            if self.0 >= m && self.0.is_multiple_of(m) {
                return write!(f, "{}{u}", self.0 / m);
            }
        }
        for (u, m) in UNITS {
            if self.0 >= m {
                return write!(f, "{:.1}{u}", self.0 as f64 / m as f64);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A CPU allowance in thousandths of a CPU (`1.5` is 1500).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cpus(pub u32);

impl FromStr for Cpus {
    type Err = LimitsError;

    fn from_str(s: &str) -> Result<Self, LimitsError> {
        let bad = || LimitsError::BadCpus(s.to_owned());
        let v: f64 = s.trim().parse().map_err(|_| bad())?;
        if !v.is_finite() || !(0.01..=4096.0).contains(&v) {
            return Err(bad());
        }
        Ok(Cpus((v * 1000.0).round() as u32))
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", f64::from(self.0) / 1000.0)
    }
}

/// The process limit a sandbox gets when none is given.
pub const DEFAULT_PIDS: u32 = 4096;

/// Resource limits for one sandbox. `None` means "no limit beyond the host's".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPU bandwidth.
    pub cpus: Option<Cpus>,
    /// Memory (and swap: none is allowed beyond this).
    pub memory: Option<ByteSize>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u32>,
    /// Size of the sandbox's writable disk (the vm backend's disk layer).
    #[serde(default)]
    pub disk: Option<ByteSize>,
}

impl Limits {
    /// Parses a memory limit and checks it is large enough to start.
    pub fn parse_memory(s: &str) -> Result<ByteSize, LimitsError> {
        let m: ByteSize = s.parse()?;
        if m.0 < 16 << 20 {
            return Err(LimitsError::MemoryTooSmall(m));
        }
        Ok(m)
    }

    /// Parses a disk size and checks it is large enough to hold an image.
    pub fn parse_disk(s: &str) -> Result<ByteSize, LimitsError> {
        let d: ByteSize = s.parse()?;
        if d.0 < 1 << 30 {
            return Err(LimitsError::DiskTooSmall(d));
        }
        Ok(d)
    }

    /// Parses a process limit.
    pub fn parse_pids(s: &str) -> Result<u32, LimitsError> {
        match s.trim().parse::<u32>() {
            Ok(n) if n >= 16 => Ok(n),
            _ => Err(LimitsError::BadPids(s.to_owned())),
        }
    }

    /// Fills every limit not set here from `defaults` (flags first, then what a sandbox had,
    /// then the host's defaults).
    pub fn or(self, defaults: &Limits) -> Limits {
        Limits {
            cpus: self.cpus.or(defaults.cpus),
            memory: self.memory.or(defaults.memory),
            pids: self.pids.or(defaults.pids),
            disk: self.disk.or(defaults.disk),
        }
    }

    /// The defaults a new sandbox sharing the host's kernel gets on a host with `ram` bytes of
    /// memory and `free_disk` bytes free where its layer lives: a quarter of the RAM in whole GiB
    /// (at least 2 GiB, never more than the RAM), half the free disk rounded down to a power of two GiB
    /// (at least 1 GiB; a few sizes only, so that an empty layer of each can be kept), and
    /// [`DEFAULT_PIDS`] tasks. CPU time is not capped by default: a busy sandbox slows the host
    /// without taking it.
    pub fn host_defaults(ram: u64, free_disk: u64) -> Limits {
        const GIB: u64 = 1 << 30;
        let memory = (ram / 4 / GIB * GIB).max(2 * GIB).min(ram.max(16 << 20));
        let half = (free_disk / 2 / GIB).max(1);
        let disk = (1u64 << (63 - half.leading_zeros())) * GIB;
        Limits {
            cpus: None,
            memory: Some(ByteSize(memory)),
            pids: Some(DEFAULT_PIDS),
            disk: Some(ByteSize(disk)),
        }
    }

    /// The size of each of a sandbox's memory file systems (`/tmp`, `/dev/shm`): half its memory
    /// limit, so that both together fit in it (their pages count against the limit too).
    pub fn tmpfs_size(&self) -> Option<ByteSize> {
        self.memory.map(|m| ByteSize((m.0 / 2).max(1 << 20)))
    }

    /// Refuses a CPU or memory limit beyond what `host` has (the error names the host's figure).
    pub fn check_host(&self, host: &HostCapacity) -> Result<(), LimitsError> {
        if let Some(c) = self.cpus
            && host.cpus > 0
            && u64::from(c.0) > u64::from(host.cpus) * 1000
        {
            return Err(LimitsError::CpusBeyondHost {
                asked: c,
                host: host.cpus,
            });
        }
        if let Some(m) = self.memory
            && host.memory > 0
            && m.0 > host.memory
        {
            return Err(LimitsError::MemoryBeyondHost {
                asked: m,
                host: ByteSize(host.memory),
            });
        }
        Ok(())
    }

    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.cpus.is_none() && self.memory.is_none() && self.pids.is_none() && self.disk.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("512m", Some(512 << 20)),
            ("2G", Some(2 << 30)),
            ("1.5GiB", Some(3 << 29)),
            ("1048576", Some(1 << 20)),
            ("64k", Some(64 << 10)),
            ("12potatoes", None),
            ("", None),
            ("m", None),
            ("1.2.3g", None),
            ("-5m", None),
            ("0", None),
        ];
        for (s, want) in cases {
            assert_eq!(s.parse::<ByteSize>().ok().map(|b| b.0), *want, "{s}");
        }
    }

    #[test]
    fn memory_error_says_what_is_wrong() {
        let e = Limits::parse_memory("12potatoes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid size \"12potatoes\": expected a number with an optional unit (k, m, g, t; e.g. 512m, 2g)"
        );
        assert!(matches!(
            Limits::parse_memory("1m"),
            Err(LimitsError::MemoryTooSmall(_))
        ));
    }

    #[test]
    fn host_defaults() {
        const G: u64 = 1 << 30;
        let d = Limits::host_defaults(24 * G, 80 * G);
        assert_eq!(
            d,
            Limits {
                cpus: None,
                memory: Some(ByteSize(6 * G)),
                pids: Some(DEFAULT_PIDS),
                disk: Some(ByteSize(32 * G)),
            }
        );
        // A small host: at least 2 GiB of memory (never more than it has), 1 GiB of disk.
        let small = Limits::host_defaults(G, G / 2);
        assert_eq!(small.memory, Some(ByteSize(G)));
        assert_eq!(small.disk, Some(ByteSize(G)));
        assert_eq!(
            Limits::host_defaults(4 * G, 3 * G + 5).disk,
            Some(ByteSize(G))
        );
        assert_eq!(d.tmpfs_size(), Some(ByteSize(3 * G)));
        // Flags first, then what the sandbox had, then the defaults.
        let flags = Limits {
            memory: Some(ByteSize(G)),
            ..Limits::default()
        };
        let had = Limits {
            pids: Some(99),
            memory: Some(ByteSize(2 * G)),
            ..Limits::default()
        };
        let got = flags.or(&had).or(&d);
        assert_eq!(got.memory, Some(ByteSize(G)));
        assert_eq!(got.pids, Some(99));
        assert_eq!(got.disk, Some(ByteSize(32 * G)));
        assert_eq!(
            Limits::host_defaults(G, 130 * G).disk,
            Some(ByteSize(64 * G))
        );
    }

    #[test]
    fn limits_beyond_the_host_are_refused() {
        const G: u64 = 1 << 30;
        let host = HostCapacity {
            cpus: 2,
            memory: 8 * G,
        };
        let limits = |cpus: &str, memory: &str| Limits {
            cpus: Some(cpus.parse().unwrap()),
            memory: Some(Limits::parse_memory(memory).unwrap()),
            ..Limits::default()
        };
        let cases: &[(&str, &str, Result<(), LimitsError>)] = &[
            ("2", "8g", Ok(())),
            ("0.5", "512m", Ok(())),
            (
                "2.01",
                "1g",
                Err(LimitsError::CpusBeyondHost {
                    asked: Cpus(2010),
                    host: 2,
                }),
            ),
            (
                "999",
                "1g",
                Err(LimitsError::CpusBeyondHost {
                    asked: Cpus(999_000),
                    host: 2,
                }),
            ),
            (
                "1",
                "100t",
                Err(LimitsError::MemoryBeyondHost {
                    asked: ByteSize(100 << 40),
                    host: ByteSize(8 * G),
                }),
            ),
        ];
        for (cpus, memory, want) in cases {
            assert_eq!(
                limits(cpus, memory).check_host(&host),
                *want,
                "{cpus} {memory}"
            );
        }
        // Nothing set, or nothing known about the host: nothing to refuse.
        assert_eq!(Limits::default().check_host(&host), Ok(()));
        assert_eq!(
            limits("999", "100t").check_host(&HostCapacity::default()),
            Ok(())
        );
        assert_eq!(
            limits("999", "1g")
                .check_host(&host)
                .unwrap_err()
                .to_string(),
            "--cpus 999 is more than this host's 2 online CPU(s); give at most --cpus 2"
        );
        assert_eq!(
            limits("1", "100t")
                .check_host(&host)
                .unwrap_err()
                .to_string(),
            "--memory 100T is more than this host's 8G of memory; give at most --memory 8G"
        );
    }

    #[test]
    fn cpus_and_pids() {
        assert_eq!("1.5".parse::<Cpus>().unwrap(), Cpus(1500));
        assert!("0".parse::<Cpus>().is_err());
        assert!("lots".parse::<Cpus>().is_err());
        assert_eq!(Limits::parse_pids("256").unwrap(), 256);
        assert!(Limits::parse_pids("3").is_err());
        assert_eq!(ByteSize(3 << 29).to_string(), "1536M");
        assert_eq!(ByteSize((1 << 30) + 1).to_string(), "1.0G");
        assert_eq!(ByteSize(512 << 20).to_string(), "512M");
    }
}
