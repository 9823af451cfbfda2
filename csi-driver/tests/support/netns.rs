//! A private network: one bridge in the root namespace and one network
//! namespace per storage system, joined to the bridge by a veth pair, on a
//! /24 of private addresses. The test process (root namespace) reaches every
//! namespace through the bridge address.

use std::net::Ipv4Addr;

use super::{sh, unique_id};

pub struct Network {
    pub id: u32,
    pub bridge: String,
    pub subnet: [u8; 3],
    namespaces: Vec<String>,
    veths: Vec<String>,
}

impl Network {
    /// Creates the bridge at `<subnet>.1/24`.
    pub fn new() -> Self {
        let id = unique_id();
        // 10.<200-249>.<0-249>.0/24, derived from the id.
        let subnet = [10, 200 + (id / 250 % 50) as u8, (id % 250) as u8];
        let bridge = format!("rmb{id}");
        let net = Network {
            id,
            bridge: bridge.clone(),
            subnet,
            namespaces: Vec::new(),
            veths: Vec::new(),
        };
        sh("ip", &["link", "add", &bridge, "type", "bridge"]).expect("create bridge");
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.addr(1)),
                "dev",
                &bridge,
            ],
        )
        .expect("address bridge");
        sh("ip", &["link", "set", &bridge, "up"]).expect("bridge up");
        net
    }

    pub fn addr(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], host)
    }

    /// Creates namespace number `index` with address `<subnet>.(10+index)`;
    /// returns its name and address.
    pub fn add_namespace(&mut self, index: u8) -> (String, Ipv4Addr) {
        let ns = format!("rdpt{}-{index}", self.id);
        let host_veth = format!("rmv{}h{index}", self.id);
        let ns_veth = format!("rmv{}n{index}", self.id);
        let addr = self.addr(10 + index);
        sh("ip", &["netns", "add", &ns]).expect("create netns");
        self.namespaces.push(ns.clone());
        sh(
            "ip",
            &[
                "link", "add", &host_veth, "type", "veth", "peer", "name", &ns_veth,
            ],
        )
        .expect("create veth");
        self.veths.push(host_veth.clone());
        sh("ip", &["link", "set", &host_veth, "master", &self.bridge]).expect("enslave veth");
        sh("ip", &["link", "set", &host_veth, "up"]).expect("veth up");
        sh("ip", &["link", "set", &ns_veth, "netns", &ns]).expect("move veth");
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns];
            all.extend_from_slice(args);
            sh("ip", &all).expect("configure namespace");
        };
        in_ns(&["ip", "link", "set", "lo", "up"]);
        in_ns(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &ns_veth]);
        in_ns(&["ip", "link", "set", &ns_veth, "up"]);
        (ns, addr)
    }

    /// Drops every packet between namespace `ns` and `peer` (both ways), with
    /// nftables inside `ns`.
    pub fn partition(ns: &str, peer: Ipv4Addr) {
        let peer = peer.to_string();
        let rules = format!(
            "table inet roamtest {{\n\
               chain input {{ type filter hook input priority 0; ip saddr {peer} drop; }}\n\
               chain output {{ type filter hook output priority 0; ip daddr {peer} drop; }}\n\
             }}\n"
        );
        nft_in(ns, &rules);
    }

    /// Removes every partition rule of namespace `ns`.
    pub fn heal(ns: &str) {
        let _ = sh(
            "ip",
            &[
                "netns", "exec", ns, "nft", "delete", "table", "inet", "roamtest",
            ],
        );
    }
}

fn nft_in(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("nft stdin")
        .write_all(rules.as_bytes())
        .expect("write nft rules");
    let status = child.wait().expect("wait for nft");
    assert!(status.success(), "nft -f in {ns} failed: {status}");
}

impl Drop for Network {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..) {
            let _ = sh("ip", &["netns", "del", &ns]);
        }
        for veth in self.veths.drain(..) {
            let _ = sh("ip", &["link", "del", &veth]);
        }
        let _ = sh("ip", &["link", "del", &self.bridge]);
    }
}
