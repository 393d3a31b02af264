//! Who a request is served for, and whether they may make it.
//!
//! A user certificate is its own principal, with the access level it
//! carries. A node may pass a user's request on: it vouches for the user it
//! authenticated (the request carries that principal and the node's name,
//! `via`). A node acting for itself may do so only directly: a node
//! certificate can never speak for another node. Writes are checked against
//! the command rules in `state::authz` by the node that proposes them (and
//! again when applied); the other requests are checked here.

use super::messages::{ClientEnvelope, ClientRequest, Forwarded};
use crate::ca::{Access, Identity, Role};
use crate::state::{Principal, State, MEMBERSHIP_ACCESS};

/// The principal a request is served for and the node that vouched for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// The node that authenticated a user and passed the request on.
    pub via: Option<String>,
}

impl Caller {
    /// This node acting for itself.
    pub fn node(name: &str) -> Caller {
        Caller {
            principal: Principal::Node {
                name: name.to_string(),
            },
            via: None,
        }
    }

    /// The principal of a request that arrived from `peer`.
    pub fn of(peer: &Identity, env: &ClientEnvelope, state: &State) -> Result<Caller, String> {
        match peer.role {
            Role::User => Ok(Caller {
                principal: Principal::User {
                    name: peer.name.clone(),
                    access: peer.access.unwrap_or(Access::Admin),
                },
                via: None,
            }),
            Role::Node => match &env.forwarded {
                Some(Forwarded {
                    principal: principal @ Principal::User { .. },
                    via,
                }) => Ok(Caller {
                    principal: principal.clone(),
                    via: Some(via.clone()),
                }),
                // A joining node's request, passed on by the member it
                // reached (which authenticated it), is the one exception.
                Some(Forwarded {
                    principal: principal @ Principal::Node { name },
                    via,
                }) if matches!(&env.request, ClientRequest::MembersAdd { name: joining, .. } if joining == name) => {
                    Ok(Caller {
                        principal: principal.clone(),
                        via: Some(via.clone()),
                    })
                }
                Some(Forwarded {
                    principal: Principal::Node { name },
                    ..
                }) if *name != peer.name => Err(format!(
                    "permission denied: node {} may not act for node {name}",
                    peer.name
                )),
                Some(Forwarded { .. }) => Ok(Caller::node(&peer.name)),
                None => Self::from_first_release(peer, env, state),
            },
        }
    }

    /// A request forwarded by a first-release node, which names its user
    /// but not the user's role. Every user was an admin then; once every
    /// voter runs a build with roles, such requests are refused.
    fn from_first_release(
        peer: &Identity,
        env: &ClientEnvelope,
        state: &State,
    ) -> Result<Caller, String> {
        let user = env
            .user
            .as_deref()
            .filter(|u| !u.starts_with("node "))
            .map(str::to_string);
        match (user, state.authorization_from) {
            (None, _) => Ok(Caller::node(&peer.name)),
            (Some(_), Some(_)) => Err(format!(
                "refused: node {} forwarded a request without saying its user's role; upgrade it",
                peer.name
            )),
            (Some(name), None) => Ok(Caller {
                principal: Principal::User {
                    name,
                    access: Access::Admin,
                },
                via: Some(peer.name.clone()),
            }),
        }
    }

    /// What the leader is told when this node forwards the request.
    pub fn forwarded(&self, this_node: &str) -> Forwarded {
        Forwarded {
            principal: self.principal.clone(),
            via: self.via.clone().unwrap_or_else(|| this_node.to_string()),
        }
    }

    /// Whether the caller may make a request other than a write (writes
    /// are checked per command by `State::authorize`).
    pub fn permit(&self, request: &ClientRequest) -> Result<(), String> {
        let needs = match request {
            ClientRequest::Nodes { .. }
            | ClientRequest::PlanDeploy { .. }
            | ClientRequest::ShowConfig
            | ClientRequest::ShowConfigVersion { .. }
            | ClientRequest::Status
            | ClientRequest::History
            | ClientRequest::HistoryPage { .. }
            | ClientRequest::WhoAmI
            | ClientRequest::Logs(_)
            | ClientRequest::Events { .. }
            | ClientRequest::Write { .. } => return Ok(()),
            ClientRequest::MembersAdd { name, .. } => {
                // A node asks to join for itself (`--join`).
                if matches!(&self.principal, Principal::Node { name: me } if me == name) {
                    return Ok(());
                }
                MEMBERSHIP_ACCESS
            }
            ClientRequest::MembersRemove { .. } => MEMBERSHIP_ACCESS,
            // The whole state, environment values included: a backup.
            ClientRequest::SnapshotSave => MEMBERSHIP_ACCESS,
        };
        match &self.principal {
            Principal::User { access, .. } if *access >= needs => Ok(()),
            Principal::User { name, access } => Err(format!(
                "permission denied: user {name} has role {access}; {} needs role {needs}",
                request_name(request)
            )),
            Principal::Node { name } => Err(format!(
                "permission denied: node {name} may not do this for others: {} needs a user with role {needs}",
                request_name(request)
            )),
        }
    }
}

fn request_name(request: &ClientRequest) -> &'static str {
    match request {
        ClientRequest::SnapshotSave => "saving a snapshot",
        _ => "changing membership",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, access: Option<Access>) -> Identity {
        Identity {
            role: Role::User,
            name: name.into(),
            access,
            fingerprint: "0".repeat(64),
            not_after: 0,
        }
    }

    fn node(name: &str) -> Identity {
        Identity {
            role: Role::Node,
            access: None,
            ..user(name, None)
        }
    }

    fn env(forwarded: Option<Forwarded>, user: Option<&str>) -> ClientEnvelope {
        ClientEnvelope {
            user: user.map(str::to_string),
            forwarded,
            ..ClientEnvelope::new(ClientRequest::Status)
        }
    }

    #[test]
    fn a_user_is_what_its_certificate_says_whatever_it_claims() {
        let claims = Some(Forwarded {
            principal: Principal::Node { name: "n1".into() },
            via: "n1".into(),
        });
        let caller = Caller::of(
            &user("bob", Some(Access::Viewer)),
            &env(claims, Some("admin")),
            &State::default(),
        )
        .unwrap();
        assert_eq!(
            caller.principal,
            Principal::User {
                name: "bob".into(),
                access: Access::Viewer
            }
        );
    }

    #[test]
    fn a_node_vouches_for_users_but_never_acts_for_another_node() {
        let state = State::default();
        let for_alice = Some(Forwarded {
            principal: Principal::User {
                name: "alice".into(),
                access: Access::Operator,
            },
            via: "n2".into(),
        });
        let caller = Caller::of(&node("n2"), &env(for_alice, None), &state).unwrap();
        assert_eq!(caller.via.as_deref(), Some("n2"));
        let as_n3 = Some(Forwarded {
            principal: Principal::Node { name: "n3".into() },
            via: "n2".into(),
        });
        let refused = Caller::of(&node("n2"), &env(as_n3.clone(), None), &state).unwrap_err();
        assert!(refused.contains("may not act for node n3"), "{refused}");
        // Except to pass on n3's own request to join.
        let join = ClientEnvelope {
            forwarded: as_n3,
            ..ClientEnvelope::new(ClientRequest::MembersAdd {
                name: "n3".into(),
                address: "127.0.0.1:3".into(),
            })
        };
        assert!(Caller::of(&node("n2"), &join, &state).is_ok());
    }

    #[test]
    fn first_release_forwarding_is_trusted_only_before_the_switch() {
        let mut state = State::default();
        let old = env(None, Some("alice"));
        let caller = Caller::of(&node("n2"), &old, &state).unwrap();
        assert!(matches!(
            caller.principal,
            Principal::User {
                access: Access::Admin,
                ..
            }
        ));
        state.authorization_from = Some(7);
        assert!(Caller::of(&node("n2"), &old, &state).is_err());
        // A node speaking for itself in the old way is still itself.
        let own = env(None, Some("node n2"));
        assert_eq!(
            Caller::of(&node("n2"), &own, &state).unwrap(),
            Caller::node("n2")
        );
    }

    #[test]
    fn membership_needs_an_admin_except_a_node_joining_itself() {
        let remove = ClientRequest::MembersRemove { name: "n4".into() };
        let operator = Caller {
            principal: Principal::User {
                name: "op".into(),
                access: Access::Operator,
            },
            via: None,
        };
        let why = operator.permit(&remove).unwrap_err();
        assert!(why.contains("needs role admin"), "{why}");
        let join = ClientRequest::MembersAdd {
            name: "n4".into(),
            address: "127.0.0.1:1".into(),
        };
        assert!(Caller::node("n4").permit(&join).is_ok());
        assert!(Caller::node("n5").permit(&join).is_err());
    }
}
