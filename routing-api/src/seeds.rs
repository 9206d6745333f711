//! The router groups seeded from the config (`router_groups`): checked with upstream's rules
//! when the config is loaded ([`check`], kept out of [`crate::config`] so that the config does
//! not depend on [`crate::validation`]) and turned into router groups to write once the lock
//! is held ([`router_groups`]).

use routing_api_client::RouterGroup;

use crate::config::{Config, ConfigError};

/// Checks the seeded router groups against `reserved_system_component_ports` and
/// `fail_on_router_port_conflicts`, as upstream does at load.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    crate::validation::validate_seed_router_groups(
        &config.router_groups,
        &config.reserved_system_component_ports,
        config.fail_on_router_port_conflicts,
    )
    .map_err(|message| ConfigError::Invalid {
        key: "router_groups",
        message,
    })
}

/// The seeds as router groups, each with a fresh guid (the store keeps existing ones).
pub fn router_groups(config: &Config) -> Vec<RouterGroup> {
    config
        .router_groups
        .iter()
        .map(|g| RouterGroup {
            guid: uuid::Uuid::new_v4().to_string(),
            name: g.name.clone(),
            kind: g.kind.clone(),
            reservable_ports: g.reservable_ports.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "system_domain: example.com\nlog_guid: routing-api\nuuid: u1\n";

    #[test]
    fn a_bad_seed_is_an_error_naming_the_key() {
        let yaml = format!(
            "{MINIMAL}router_groups:\n- {{name: a, type: tcp, reservable_ports: \"10-20\"}}\n"
        );
        let c = Config::from_yaml(&yaml, true).unwrap();
        let e = check(&c).unwrap_err().to_string();
        assert!(e.contains("router_groups"), "{e}");
        assert!(e.contains("Port must be between 1024 and 65535"), "{e}");
    }

    #[test]
    fn good_seeds_pass_and_get_guids() {
        let yaml = format!(
            "{MINIMAL}router_groups:\n- {{name: a, type: tcp, reservable_ports: \"1024-1033\"}}\n"
        );
        let c = Config::from_yaml(&yaml, true).unwrap();
        check(&c).unwrap();
        let groups = router_groups(&c);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].name, "a");
        assert!(!groups[0].guid.is_empty());
    }
}
