//! The items of the bench: catalog devices of an OPC UA-only plan, taken
//! whole (the last one cut) until there are exactly `--items` variables,
//! and the gateway config that subscribes to every one of them.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use fieldlink_gateway::GatewayConfig;
use fieldlink_model::Protocol;
use fieldlink_sim::opcua::nodes;
use fieldlink_sim::{FleetPlan, FleetSpec, ProtocolMix};

use crate::common::quote;

/// Id of the bench's gateway.
pub(crate) const GATEWAY_ID: &str = "bench-opcua-gw";

/// Devices and how many of each one's tags are subscribed.
#[derive(Debug, Clone)]
pub(crate) struct Items {
    /// The plan (every device is OPC UA).
    pub(crate) plan: FleetPlan,
    /// Per device of the plan (in index order): tags taken.
    pub(crate) taken: Vec<usize>,
    /// Items in all.
    pub(crate) total: usize,
}

impl Items {
    /// The smallest plan whose devices carry at least `n` variables; its
    /// devices are taken whole, in order, the last one cut.
    ///
    /// # Errors
    /// When the plan cannot be made.
    pub(crate) fn pick(n: usize) -> anyhow::Result<Items> {
        if n == 0 {
            bail!("--items must be at least 1");
        }
        let most = fieldlink_sim::CATALOG
            .iter()
            .map(|t| t.tag_count())
            .max()
            .unwrap_or(1);
        let mut devices = n.div_ceil(most).max(1);
        loop {
            let plan = FleetPlan::new(FleetSpec {
                devices: u32::try_from(devices).context("too many items")?,
                protocols: ProtocolMix::only(Protocol::OpcUa),
                ..FleetSpec::default()
            })
            .context("cannot plan the bench's devices")?;
            let total: usize = plan.devices().map(|d| d.device_type.tag_count()).sum();
            if total >= n {
                // Devices past the n-th item carry none (they are served,
                // not subscribed).
                let mut left = n;
                let mut taken = Vec::new();
                for d in plan.devices() {
                    if left == 0 {
                        break;
                    }
                    let k = d.device_type.tag_count().min(left);
                    taken.push(k);
                    left -= k;
                }
                return Ok(Items {
                    plan,
                    taken,
                    total: n,
                });
            }
            devices += 1;
        }
    }

    /// The NodeIds of every item, as text.
    pub(crate) fn node_ids(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.total);
        for (d, &k) in self.plan.devices().zip(&self.taken) {
            let id = d.id();
            for t in d.device_type.all_tags().take(k) {
                out.push(nodes::tag_node(&id, t.name).to_string());
            }
        }
        out
    }

    /// Devices carrying items.
    pub(crate) fn devices(&self) -> usize {
        self.taken.len()
    }
}

/// The gateway's config: every item of every device on the one server.
///
/// # Errors
/// When the gateway would refuse it.
pub(crate) fn gateway_config(
    items: &Items,
    endpoint: &str,
    interval: Duration,
    registry: &str,
    token: &str,
    data_dir: &Path,
    metrics: SocketAddr,
) -> anyhow::Result<String> {
    let every = humantime::format_duration(interval).to_string();
    let mut text = String::new();
    let _ = write!(
        text,
        "gateway_id = {}\ndata_dir = {}\n[uplink]\nregistry = {}\ntoken = {}\n[metrics]\nlisten = \"{metrics}\"\n[limits]\nmax_tags_per_device = 10000\n\
         [opcua]\npki_dir = {}\nrequest_timeout = \"60s\"\npublishing_interval = \"{every}\"\nsampling_interval = \"{every}\"\n\
         [opcua.servers.sim-0]\nendpoint = {}\n",
        quote(GATEWAY_ID),
        quote(&data_dir.to_string_lossy()),
        quote(registry),
        quote(token),
        quote(&data_dir.join("pki").to_string_lossy()),
        quote(endpoint),
    );
    for (d, &k) in items.plan.devices().zip(&items.taken) {
        let id = d.id();
        let ty = d.device_type;
        let _ = write!(
            text,
            "[[devices]]\nid = {}\nclass = \"{}\"\ncategory = \"{}\"\ntype = {}\nname = {}\nprotocol = \"opc-ua\"\n[devices.opcua]\nserver = \"sim-0\"\nroot = {}\ntags = [\n",
            quote(&id),
            ty.class().code(),
            ty.category.code(),
            quote(ty.model),
            quote(&d.name()),
            quote(&nodes::device_node(&id).to_string()),
        );
        for t in ty.all_tags().take(k) {
            let kind = match nodes::data_type(t) {
                opcua::types::DataTypeId::Boolean => "bool",
                opcua::types::DataTypeId::String => "string",
                opcua::types::DataTypeId::Double => "double",
                _ => "int",
            };
            let _ = writeln!(
                text,
                "  {{ name = {}, node = {}, type = \"{kind}\" }},",
                quote(t.name),
                quote(&nodes::tag_node(&id, t.name).to_string())
            );
        }
        text.push_str("]\n");
    }
    GatewayConfig::from_toml(&text)
        .and_then(|c| c.validate())
        .context("the gateway refuses the bench's config")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_asked_items_are_taken_and_configured() {
        for n in [1, 37, 1000] {
            let items = Items::pick(n).unwrap();
            assert_eq!(items.taken.iter().sum::<usize>(), n);
            assert_eq!(items.node_ids().len(), n);
        }
        let items = Items::pick(100).unwrap();
        let text = gateway_config(
            &items,
            "opc.tcp://127.0.0.1:14840/",
            Duration::from_secs(1),
            "http://127.0.0.1:7600",
            "bench-opcua-token-0001",
            Path::new("/tmp/gw"),
            "127.0.0.1:9999".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(text.matches("node = ").count(), 100);
    }
}
