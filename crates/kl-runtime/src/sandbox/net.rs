//! The sandbox's network: a fresh namespace with only loopback, brought up with one netlink
//! message; and, when the platform gives an egress proxy, a forwarder from
//! `127.0.0.1:3128` inside to the proxy's unix socket (the proxy enforces the allow-list).

use std::path::PathBuf;
use std::sync::Arc;

use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Semaphore;

/// Loopback's interface index in every network namespace.
const LOOPBACK_INDEX: i32 = 1;
const RTM_NEWLINK: u16 = 16;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const IFF_UP: u32 = 0x1;
/// Connections forwarded at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 256;

/// The `RTM_NEWLINK` request that sets `IFF_UP` on loopback: a `nlmsghdr` and an `ifinfomsg`.
pub(crate) fn loopback_up_message() -> Vec<u8> {
    let mut msg = Vec::with_capacity(32);
    msg.extend(32u32.to_ne_bytes()); // nlmsg_len
    msg.extend(RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    msg.extend((NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    msg.extend(1u32.to_ne_bytes()); // nlmsg_seq
    msg.extend(0u32.to_ne_bytes()); // nlmsg_pid
    msg.push(0); // ifi_family: AF_UNSPEC
    msg.push(0); // padding
    msg.extend(0u16.to_ne_bytes()); // ifi_type
    msg.extend(LOOPBACK_INDEX.to_ne_bytes()); // ifi_index
    msg.extend(IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend(IFF_UP.to_ne_bytes()); // ifi_change
    msg
}

/// The error code of a netlink acknowledgement (`0`: success).
pub(crate) fn ack_error(reply: &[u8]) -> Option<i32> {
    let kind = u16::from_ne_bytes(reply.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some(i32::from_ne_bytes(reply.get(16..20)?.try_into().ok()?))
}

/// Brings loopback up in the current network namespace.
pub(crate) fn loopback_up() -> Result<(), String> {
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("netlink socket: {e}"))?;
    let kernel = SocketAddrNetlink::new(0, 0);
    rustix::net::sendto(&fd, &loopback_up_message(), SendFlags::empty(), &kernel)
        .map_err(|e| format!("netlink send: {e}"))?;
    let mut reply = [0u8; 256];
    let (n, _) =
        rustix::net::recv(&fd, &mut reply, RecvFlags::empty()).map_err(|e| format!("netlink recv: {e}"))?;
    match ack_error(&reply[..n]) {
        Some(0) => Ok(()),
        Some(code) => Err(format!(
            "cannot bring loopback up: {}",
            std::io::Error::from_raw_os_error(-code)
        )),
        None => Err("cannot bring loopback up: unexpected netlink reply".into()),
    }
}

/// Forwards each connection accepted on `listener` to the unix socket at `proxy`, until the
/// task is dropped.
pub(crate) async fn forward(listener: TcpListener, proxy: PathBuf) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match UnixStream::connect(&proxy).await {
                Ok(mut outbound) => {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => eprintln!("kl-sandbox: egress proxy unreachable: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_message_layout() {
        let msg = loopback_up_message();
        assert_eq!(msg.len(), 32);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(msg[4..6].try_into().unwrap()), RTM_NEWLINK);
        assert_eq!(
            i32::from_ne_bytes(msg[20..24].try_into().unwrap()),
            1,
            "ifi_index"
        );
        assert_eq!(
            u32::from_ne_bytes(msg[24..28].try_into().unwrap()),
            IFF_UP,
            "ifi_flags"
        );
        assert_eq!(
            u32::from_ne_bytes(msg[28..32].try_into().unwrap()),
            IFF_UP,
            "ifi_change"
        );
    }

    #[test]
    fn acknowledgements_are_decoded() {
        let mut ack = vec![0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_error(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(ack_error(&ack), Some(-1));
        assert_eq!(ack_error(&[0u8; 3]), None);
    }
}
