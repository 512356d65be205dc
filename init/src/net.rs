//! Network interfaces, through rtnetlink (`netlink-packet-route` builds
//! the messages): `lo` always, because the runtime's own parts talk over
//! loopback; one interface with an address in an image made for a VM.

use nacre_init::Interface;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkFlags, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a device may take to appear after its driver loads.
const DEVICE_WAIT: Duration = Duration::from_secs(3);

/// Sets the interface `name` up.
pub fn up(name: &str) -> Result<(), String> {
    let mut link = LinkMessage::default();
    link.header.index = index(name)?;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    request(
        RouteNetlinkMessage::SetLink(link),
        NLM_F_REQUEST | NLM_F_ACK,
    )
}

/// Sets the interface up and gives it its address.
pub fn configure(iface: &Interface) -> Result<(), String> {
    let (addr, prefix_len) = iface.parsed()?;
    up(&iface.name)?;
    let mut message = AddressMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.prefix_len = prefix_len;
    message.header.index = index(&iface.name)?;
    message.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(addr)),
        AddressAttribute::Address(IpAddr::V4(addr)),
    ];
    request(
        RouteNetlinkMessage::NewAddress(message),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The kernel's index of `name`, waiting for the device to appear.
fn index(name: &str) -> Result<u32, String> {
    let path = format!("/sys/class/net/{name}/ifindex");
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{path} holds {text:?}, not an index"));
            }
            Err(_) if start.elapsed() < DEVICE_WAIT => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => return Err(format!("no interface {name} ({path}: {e})")),
        }
    }
}

/// Sends one request and waits for the kernel's acknowledgement.
fn request(payload: RouteNetlinkMessage, flags: u16) -> Result<(), String> {
    let socket = Socket::new(NETLINK_ROUTE).map_err(|e| format!("cannot open rtnetlink: {e}"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| format!("cannot reach rtnetlink: {e}"))?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| format!("cannot send to rtnetlink: {e}"))?;
    let mut answer = vec![0u8; 8192];
    let n = socket
        .recv(&mut &mut answer[..], 0)
        .map_err(|e| format!("no answer from rtnetlink: {e}"))?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..n])
        .map_err(|e| format!("an answer rtnetlink should not give: {e}"))?;
    match reply.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(format!(
                "the kernel refused it: {}",
                std::io::Error::from_raw_os_error(-code.get())
            )),
        },
        other => Err(format!(
            "rtnetlink answered {other:?}, not an acknowledgement"
        )),
    }
}
