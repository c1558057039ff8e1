//! Who published a message, as the broker proves it (the `user_id`
//! property, which RabbitMQ checks against the connection's user), and the
//! permissions that let a tenant's own broker user do only its own
//! business. The trust model: docs/SECURITY.md.

use std::sync::Arc;

use lapin::BasicProperties;

use super::{Topology, Undecodable};

/// The broker user a URL connects as (RabbitMQ's `guest` when it names
/// none).
pub fn url_user(url: &str) -> String {
    use std::str::FromStr;
    lapin::uri::AMQPUri::from_str(url)
        .map(|u| u.authority.userinfo.username)
        .unwrap_or_else(|_| "guest".into())
}

/// The broker permissions of a tenant's own user (RabbitMQ regexes, one
/// vhost), so that the broker itself enforces who may do what:
/// - publish only to the intake exchange (not the default exchange, the
///   events exchange or the control exchange);
/// - declare, bind and consume only server-named queues (`amq.gen-*`; the
///   service's own private queues are exclusive, so unusable by others);
/// - bind such a queue to the events exchange only with binding keys under
///   `job.<tenant>.` (topic permission): a tenant hears only its own
///   events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantPermissions {
    pub configure: String,
    pub write: String,
    pub read: String,
    /// The topic exchange the topic permissions apply to.
    pub topic_exchange: String,
    pub topic_write: String,
    pub topic_read: String,
}

impl TenantPermissions {
    pub fn new(topo: &Topology, tenant: &str) -> TenantPermissions {
        let q = regex_escape;
        TenantPermissions {
            configure: "^amq\\.gen-.*$".into(),
            write: format!("^({}|amq\\.gen-.*)$", q(&topo.intake)),
            read: format!("^({}|amq\\.gen-.*)$", q(&topo.events)),
            topic_exchange: topo.events.clone(),
            topic_write: "^$".into(),
            topic_read: format!("^job\\.{}\\.", q(tenant)),
        }
    }
}

/// `s` with every regex metacharacter escaped.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Who published a message, as the broker proved it (its `user_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A service user (see [`AmqpConfig::service_users`]).
    Service(String),
    /// A tenant publishing as its own broker user.
    Tenant(String),
}

/// Who may publish jobs: the service users and the known tenants (a
/// tenant's broker user is named like the tenant).
#[derive(Clone)]
pub struct Trust {
    pub service_users: Vec<String>,
    pub tenants: Tenants,
}

/// The tenants a service knows.
#[derive(Clone)]
pub enum Tenants {
    /// A fixed set (tests, tools).
    Fixed(std::collections::BTreeSet<String>),
    /// Those with a working API key, followed as the key file changes: a
    /// tenant added by `vidflow tenant add` is known without a restart,
    /// and one whose keys are all revoked or expired is not.
    Keys(Arc<crate::auth::KeyRing>),
}

impl Tenants {
    pub fn contains(&self, tenant: &str) -> bool {
        match self {
            Tenants::Fixed(s) => s.contains(tenant),
            Tenants::Keys(k) => k.current().has_tenant(tenant),
        }
    }
}

impl Trust {
    pub fn is_service(&self, props: &BasicProperties) -> bool {
        props
            .user_id()
            .as_ref()
            .is_some_and(|u| self.service_users.iter().any(|s| s == u.as_str()))
    }
}

/// Who published a job message, or why it counts as unauthenticated (the
/// field is `user_id`): a message with no `user_id` property (the broker
/// checks one only when it is set), or one from a broker user that is
/// neither a service user nor a known tenant.
pub fn authenticate(props: &BasicProperties, trust: &Trust) -> Result<Origin, Undecodable> {
    let unauth = |error: String| Undecodable {
        field: "user_id".into(),
        error: format!("unauthenticated: {error}"),
    };
    let Some(user) = props.user_id().as_ref().map(|u| u.as_str().to_string()) else {
        return Err(unauth(
            "the message has no user_id property (publish with user_id = your broker user; \
             the broker verifies it)"
                .into(),
        ));
    };
    if trust.service_users.contains(&user) {
        return Ok(Origin::Service(user));
    }
    if trust.tenants.contains(&user) {
        return Ok(Origin::Tenant(user));
    }
    Err(unauth(format!(
        "broker user {user:?} is not a tenant of this service"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_are_told_apart_by_their_proven_user() {
        let trust = Trust {
            service_users: vec!["vidflow".into()],
            tenants: Tenants::Fixed(["acme".to_string()].into_iter().collect()),
        };
        let as_user = |u: &str| BasicProperties::default().with_user_id(u.into());
        assert_eq!(
            authenticate(&as_user("vidflow"), &trust),
            Ok(Origin::Service("vidflow".into()))
        );
        assert_eq!(
            authenticate(&as_user("acme"), &trust),
            Ok(Origin::Tenant("acme".into()))
        );
        let e = authenticate(&as_user("mallory"), &trust).unwrap_err();
        assert_eq!(e.field, "user_id");
        assert!(e.error.starts_with("unauthenticated"), "{e:?}");
        let e = authenticate(&BasicProperties::default(), &trust).unwrap_err();
        assert!(e.error.contains("no user_id"), "{e:?}");
        assert!(trust.is_service(&as_user("vidflow")));
        assert!(!trust.is_service(&as_user("acme")));
        assert!(!trust.is_service(&BasicProperties::default()));
    }

    #[test]
    fn tenant_permissions_name_only_what_a_tenant_may_touch() {
        let p = TenantPermissions::new(&Topology::new("vf-1"), "acme");
        assert_eq!(p.configure, "^amq\\.gen-.*$");
        assert_eq!(p.write, "^(vf\\-1\\.intake|amq\\.gen-.*)$");
        assert_eq!(p.read, "^(vf\\-1\\.events|amq\\.gen-.*)$");
        assert_eq!(p.topic_exchange, "vf-1.events");
        assert_eq!(
            (p.topic_write.as_str(), p.topic_read.as_str()),
            ("^$", "^job\\.acme\\.")
        );
    }

    #[test]
    fn url_users() {
        assert_eq!(url_user("amqp://127.0.0.1:5679/%2f"), "guest");
        assert_eq!(url_user("amqp://acme:pw@127.0.0.1:5679/%2f"), "acme");
    }
}
