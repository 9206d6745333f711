//! Routing API models, serialised exactly as upstream does (field names, order, omissions).

use serde::{Deserialize, Serialize};

/// Orders changes to one route: a new guid per route, `index` bumped on every update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModificationTag {
    #[serde(default)]
    pub guid: String,
    #[serde(default)]
    pub index: u32,
}

impl ModificationTag {
    /// Whether an event carrying `newer` should replace state carrying `self`.
    pub fn succeeded_by(&self, newer: &ModificationTag) -> bool {
        self.guid.is_empty()
            || newer.guid.is_empty()
            || self.guid != newer.guid
            || self.index < newer.index
    }
}

/// An HTTP route (B.2). `ttl` is optional in requests (defaults to `max_ttl`) and always set
/// in responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub route_service_url: String,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

/// A TCP route mapping (B.4). `backend_tls_port` 0, -1 and absent all mean "no TLS port";
/// `backend_sni_hostname` absent and empty both mean "no SNI".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpRouteMapping {
    #[serde(default)]
    pub router_group_guid: String,
    #[serde(default)]
    pub backend_port: u16,
    #[serde(default)]
    pub backend_tls_port: i32,
    #[serde(default)]
    pub backend_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_sni_hostname: Option<String>,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub modification_tag: ModificationTag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default)]
    pub isolation_segment: String,
}

impl TcpRouteMapping {
    /// The TLS port, if the mapping has one (> 0).
    pub fn tls_port(&self) -> Option<u16> {
        u16::try_from(self.backend_tls_port).ok().filter(|p| *p > 0)
    }

    /// The SNI hostname, if any (empty counts as none).
    pub fn sni_hostname(&self) -> Option<&str> {
        self.backend_sni_hostname
            .as_deref()
            .filter(|s| !s.is_empty())
    }
}

/// Router group types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouterGroupType {
    Tcp,
    Http,
}

impl RouterGroupType {
    pub fn as_str(self) -> &'static str {
        match self {
            RouterGroupType::Tcp => "tcp",
            RouterGroupType::Http => "http",
        }
    }
}

/// A router group (B.3). `type` stays a string on the wire so unknown values can be reported
/// with upstream's message rather than a JSON error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterGroup {
    #[serde(default)]
    pub guid: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reservable_ports: String,
}

/// The error body of every failed Routing API call: `{"name":…,"message":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{name}: {message}")]
pub struct ErrorBody {
    pub name: String,
    pub message: String,
}

/// SSE event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventAction {
    Upsert,
    Delete,
}

impl EventAction {
    pub fn as_str(self) -> &'static str {
        match self {
            EventAction::Upsert => "Upsert",
            EventAction::Delete => "Delete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_route_serialises_like_upstream() {
        let r = HttpRoute {
            route: "myapp.example.com".into(),
            port: 9001,
            ip: "127.0.0.1".into(),
            ttl: Some(60),
            log_guid: "my-guid".into(),
            route_service_url: String::new(),
            modification_tag: ModificationTag {
                guid: "dab23546-0269-49d7-4d4b-9c8795e011ac".into(),
                index: 0,
            },
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"route":"myapp.example.com","port":9001,"ip":"127.0.0.1","ttl":60,"log_guid":"my-guid","modification_tag":{"guid":"dab23546-0269-49d7-4d4b-9c8795e011ac","index":0}}"#
        );
    }

    #[test]
    fn tcp_mapping_serialises_like_upstream() {
        let m = TcpRouteMapping {
            router_group_guid: "rg".into(),
            backend_port: 8888,
            backend_tls_port: 60001,
            backend_ip: "10.0.8.5".into(),
            backend_sni_hostname: Some("sni.example.com".into()),
            instance_id: "91860bfe".into(),
            port: 1026,
            modification_tag: ModificationTag {
                guid: "g".into(),
                index: 0,
            },
            ttl: Some(120),
            isolation_segment: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"router_group_guid":"rg","backend_port":8888,"backend_tls_port":60001,"backend_ip":"10.0.8.5","backend_sni_hostname":"sni.example.com","instance_id":"91860bfe","port":1026,"modification_tag":{"guid":"g","index":0},"ttl":120,"isolation_segment":""}"#
        );
        assert_eq!(m.tls_port(), Some(60001));
    }

    #[test]
    fn tcp_mapping_minimal_request_parses_with_defaults() {
        let m: TcpRouteMapping = serde_json::from_str(
            r#"{"router_group_guid":"rg","port":1025,"backend_ip":"127.0.0.1","backend_port":9002,"ttl":60}"#,
        )
        .unwrap();
        assert_eq!(m.backend_tls_port, 0);
        assert_eq!(m.tls_port(), None);
        assert_eq!(m.sni_hostname(), None);
        let m: TcpRouteMapping =
            serde_json::from_str(r#"{"backend_tls_port":-1,"backend_sni_hostname":""}"#).unwrap();
        assert_eq!(m.tls_port(), None);
        assert_eq!(m.sni_hostname(), None);
    }

    #[test]
    fn router_group_serialises_like_upstream() {
        let g = RouterGroup {
            guid: "g".into(),
            name: "my-http-rg".into(),
            kind: "http".into(),
            reservable_ports: String::new(),
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"guid":"g","name":"my-http-rg","type":"http","reservable_ports":""}"#
        );
    }

    #[test]
    fn modification_tag_ordering() {
        let a = ModificationTag {
            guid: "a".into(),
            index: 1,
        };
        assert!(a.succeeded_by(&ModificationTag {
            guid: "a".into(),
            index: 2
        }));
        assert!(!a.succeeded_by(&ModificationTag {
            guid: "a".into(),
            index: 1
        }));
        assert!(a.succeeded_by(&ModificationTag {
            guid: "b".into(),
            index: 0
        }));
    }
}
