//! Leader election with a `coordination.k8s.io/v1` Lease, the way client-go does it: the holder renews
//! the Lease every retry period; another replica takes it over only once it has expired; conflicting
//! writes lose on the Lease's resourceVersion; the holder releases it on shutdown so a successor need
//! not wait for expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// Where the Lease lives and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name in a cluster).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews and others retry.
    pub retry_period: Duration,
}

/// What to do with the Lease as it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseDecision {
    /// There is no Lease: create it, holding it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    Acquire,
    /// Someone else holds it and it is still valid.
    Follow {
        /// The current holder.
        holder: String,
    },
}

/// Decides what to do with the Lease, given its spec (if it exists), our identity and the time.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseDecision {
    let Some(spec) = spec else {
        return LeaseDecision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == me {
        return LeaseDecision::Renew;
    }
    if holder.is_empty() {
        return LeaseDecision::Acquire;
    }
    let last = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    match last {
        Some(last) if last.checked_add(duration).is_ok_and(|expiry| expiry > now) => LeaseDecision::Follow {
            holder: holder.to_owned(),
        },
        _ => LeaseDecision::Acquire,
    }
}

/// The Lease spec to write for a decision that makes us the holder.
pub fn held_spec(
    previous: Option<&LeaseSpec>,
    decision: &LeaseDecision,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    let (acquire_time, lease_transitions) = match decision {
        LeaseDecision::Renew => (previous.and_then(|p| p.acquire_time.clone()), transitions),
        LeaseDecision::Acquire => (Some(MicroTime(now)), transitions + 1),
        LeaseDecision::Create | LeaseDecision::Follow { .. } => (Some(MicroTime(now)), 0),
    };
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX).max(1)),
        acquire_time,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(lease_transitions),
        ..Default::default()
    }
}

/// A running leader election.
pub struct LeaderElection {
    api: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaderElection {
    /// An election over the Lease the settings name.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElection {
            api: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// Tries to hold the Lease every retry period until `shutdown`, reporting leadership through
    /// `leading`, and `up` once the Lease API has answered. Leadership is given up when renewals have
    /// failed for two thirds of the lease duration, before another replica may take over.
    pub async fn run(
        self,
        leading: watch::Sender<bool>,
        up: watch::Sender<bool>,
        shutdown: CancellationToken,
    ) {
        let span = info_span!("leader_election", lease = %format!("{}/{}", self.settings.namespace, self.settings.name), identity = %self.settings.identity);
        async move {
            let renew_deadline = self.settings.lease_duration.mul_f64(2.0 / 3.0);
            let mut last_renewal: Option<tokio::time::Instant> = None;
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(decision) => {
                        up.send_replace(true);
                        let is_leader = !matches!(decision, LeaseDecision::Follow { .. });
                        if is_leader {
                            last_renewal = Some(tokio::time::Instant::now());
                        }
                        if leading.send_replace(is_leader) != is_leader {
                            match &decision {
                                LeaseDecision::Follow { holder } => {
                                    info!(%holder, "following the current leader")
                                }
                                _ => info!("became the leader"),
                            }
                        }
                    }
                    Err(error) => {
                        warn!(%error, "could not read or write the Lease");
                        if *leading.borrow() && last_renewal.is_none_or(|t| t.elapsed() >= renew_deadline) {
                            warn!("renewals failed for too long: no longer the leader");
                            leading.send_replace(false);
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.settings.retry_period) => {}
                }
            }
            if *leading.borrow() {
                leading.send_replace(false);
                match self.release().await {
                    Ok(()) => info!("released the Lease"),
                    Err(error) => warn!(%error, "could not release the Lease; it expires on its own"),
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn try_acquire_or_renew(&self) -> Result<LeaseDecision, kube::Error> {
        let current = self.api.get_opt(&self.settings.name).await?;
        let now = Timestamp::now();
        let me = &self.settings.identity;
        let decision = decide(current.as_ref().and_then(|l| l.spec.as_ref()), me, now);
        if let LeaseDecision::Follow { .. } = decision {
            return Ok(decision);
        }
        let spec = held_spec(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &decision,
            me,
            now,
            self.settings.lease_duration,
        );
        let result = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&PostParams::default(), &lease).await.map(|_| ())
            }
            Some(mut lease) => {
                lease.spec = Some(spec);
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(decision),
            // Someone else wrote first (409 on replace, 409 AlreadyExists on create): not us this round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(LeaseDecision::Follow {
                holder: String::new(),
            }),
            Err(error) => Err(error),
        }
    }

    async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.settings.name, &PostParams::default(), &lease)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(0))),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(2),
            ..Default::default()
        }
    }

    #[test]
    fn no_lease_is_created_ours_is_renewed_a_live_one_is_followed() {
        assert_eq!(decide(None, "me", at(0)), LeaseDecision::Create);
        assert_eq!(
            decide(Some(&held_by("me", 0, 15)), "me", at(100)),
            LeaseDecision::Renew
        );
        assert_eq!(
            decide(Some(&held_by("other", 10, 15)), "me", at(20)),
            LeaseDecision::Follow {
                holder: "other".into()
            }
        );
    }

    #[test]
    fn an_expired_or_released_lease_is_taken_over() {
        assert_eq!(
            decide(Some(&held_by("other", 10, 15)), "me", at(26)),
            LeaseDecision::Acquire
        );
        let mut released = held_by("other", 10, 15);
        released.holder_identity = None;
        assert_eq!(decide(Some(&released), "me", at(11)), LeaseDecision::Acquire);
        let mut never_renewed = held_by("other", 0, 15);
        never_renewed.renew_time = None;
        never_renewed.acquire_time = None;
        assert_eq!(decide(Some(&never_renewed), "me", at(0)), LeaseDecision::Acquire);
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let previous = held_by("other", 10, 15);
        let acquired = held_spec(
            Some(&previous),
            &LeaseDecision::Acquire,
            "me",
            at(30),
            Duration::from_secs(15),
        );
        assert_eq!(acquired.holder_identity.as_deref(), Some("me"));
        assert_eq!(acquired.lease_transitions, Some(3));
        assert_eq!(acquired.acquire_time, Some(MicroTime(at(30))));
        let renewed = held_spec(
            Some(&acquired),
            &LeaseDecision::Renew,
            "me",
            at(35),
            Duration::from_secs(15),
        );
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(35))));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.lease_duration_seconds, Some(15));
        let created = held_spec(None, &LeaseDecision::Create, "me", at(1), Duration::from_secs(15));
        assert_eq!(created.lease_transitions, Some(0));
    }
}
