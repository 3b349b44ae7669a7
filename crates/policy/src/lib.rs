//! Plain policy types for Paddock, validated once at the edge.
//!
//! Everything here is data: parsing from user input (`TryFrom<&str>` / `FromStr`), validation,
//! and serde for storage. No other Paddock crate is known here. Types that reach the rest of the
//! system are already valid, so code past the CLI never re-checks them.
#![forbid(unsafe_code)]

mod limits;
mod mount;
mod name;
pub mod net;
mod path;
mod port;
mod run;

pub use limits::{ByteSize, Cpus, DEFAULT_PIDS, HostCapacity, Limits, LimitsError};
pub use mount::{Mount, MountError};
pub use name::{NameError, SandboxName};
pub use path::{AbsPath, PathError};
pub use port::{PortError, PortMap, parse_ports};
pub use run::{EnvError, EnvVar, User, UserError};
