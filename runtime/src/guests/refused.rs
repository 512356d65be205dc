//! Why the registry refuses a deploy.

/// Why a deploy was refused; each names the input and the fix.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The bytes are not a usable wasi:http component.
    #[error("{0}")]
    Invalid(String),
    /// Another guest already serves that route.
    #[error(
        "route {route} is already served by guest {by}: choose another route or delete {by} first"
    )]
    RouteTaken {
        /// The contested route.
        route: String,
        /// The guest that has it.
        by: String,
    },
    /// Another TCP guest already serves that port.
    #[error(
        "port {port} is already served by TCP guest {by}: choose another port or delete {by} first"
    )]
    PortTaken {
        /// The contested port.
        port: u16,
        /// The guest that has it.
        by: String,
    },
    /// One of the runtime's own listeners has that port.
    #[error(
        "port {port} is the runtime's own {flag} listener: choose another port for the TCP guest"
    )]
    PortReserved {
        /// The contested port.
        port: u16,
        /// The flag of the listener that has it.
        flag: &'static str,
    },
    /// The allow list asks for more than `--egress-allow` permits.
    #[error("allow rule {0} is outside this runtime's --egress-allow list")]
    NotAllowed(String),
    /// A boot guest's name was deployed or deleted through the admin API
    /// while it compiled; that later change stands.
    #[error(
        "boot guest {0} was changed through the admin API while it compiled; the admin change stands"
    )]
    Superseded(String),
}
