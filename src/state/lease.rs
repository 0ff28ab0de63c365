//! Leadership per group when several daemons share a PostgreSQL state: a lease row per group
//! with a fencing token, its expiry taken from the database's clock and renewed each tick.
//!
//! - The holder counts its lease as lost at the local monotonic time it sent the renewal, plus
//!   the lease, minus a margin, whatever the database later says, so a daemon that was stopped
//!   or cut off stops writing on its own.
//! - Before every DigitalOcean write, [`Leadership::may_write`] asks for at least the longest
//!   request plus the margin still left on the lease.
//! - A daemon that takes a lease over from another holder waits for the old lease's expiry
//!   plus the longest request before it reconciles and acts: whatever the old leader sent
//!   has been answered or abandoned by then.
//! - A new holder gets a new token; the store checks it, in the same transaction, on every
//!   journal write, so a write from a deposed leader is refused.
//!
//! On SQLite (one process, by its file lock) the daemon always leads.

use super::db::Value;
use super::{StateError, Store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long leases last and how long writes take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a renewal holds the lease.
    pub lease: Duration,
    /// The longest a DigitalOcean request may take (the client's timeout).
    pub longest_request: Duration,
}

impl Timings {
    /// The safety margin against clock rate differences and scheduling: a tenth of the lease.
    pub fn margin(&self) -> Duration {
        self.lease / 10
    }

    /// The default lease for groups ticking every `interval`: twice an interval plus the
    /// longest request, so a renewal at each tick always leaves room for a write.
    pub fn default_lease(interval: Duration, longest_request: Duration) -> Duration {
        (interval + longest_request) * 2
    }

    /// Why `lease` cannot work with ticks every `interval`, if it cannot: after a renewal at a
    /// tick, the lease must still cover the next tick, the longest request and the margin.
    pub fn check(&self, interval: Duration) -> Result<(), String> {
        let needed = interval + self.longest_request + self.margin() * 2;
        if self.lease < needed {
            return Err(format!(
                "a lease of {}s is too short: renewed every {}s, it must still leave the longest request ({}s) and a margin of a tenth of the lease; make it at least {}s",
                self.lease.as_secs_f64(),
                interval.as_secs_f64(),
                self.longest_request.as_secs_f64(),
                (((interval + self.longest_request).as_secs_f64()) / 0.8).ceil()
            ));
        }
        Ok(())
    }
}

/// What this daemon is for a group, after its renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// It leads and may act.
    Leader,
    /// It took the lease over and waits out the old leader's last request before it
    /// reconciles and acts.
    TakingOver {
        /// The old holder.
        from: String,
    },
    /// Another daemon leads.
    Follower {
        /// Who leads.
        holder: String,
    },
    /// The state could not be reached: it neither leads nor knows who does.
    Unknown {
        /// Why.
        error: String,
    },
}

impl Role {
    /// Whether this daemon holds the lease (leading, or taking over).
    pub fn holds(&self) -> bool {
        matches!(self, Role::Leader | Role::TakingOver { .. })
    }
}

/// A lease this daemon holds.
#[derive(Debug, Clone, Copy)]
struct Held {
    token: i64,
    /// When it counts as lost, by the local monotonic clock.
    valid_until: Instant,
    /// When it may act (after a takeover's wait).
    act_after: Instant,
}

/// This daemon's leases.
pub struct Leadership {
    store: Arc<Store>,
    /// This daemon's name in the lease rows: host, process and a random part.
    holder: String,
    timings: Timings,
    held: Mutex<BTreeMap<String, Held>>,
    /// Who led each group at the last renewal (for status, `plan` and the page).
    leaders: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("holder", &self.holder)
            .field("timings", &self.timings)
            .finish()
    }
}

/// This process's name in lease rows: `<host>/<pid>/<random>`, new for every start, so a
/// restarted daemon never mistakes its predecessor's lease for its own.
pub fn holder_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let ok = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) } == 0;
    let host = if ok {
        let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
        String::from_utf8_lossy(&buffer[..end]).into_owned()
    } else {
        "unknown-host".into()
    };
    format!("{host}/{}/{:04x}", std::process::id(), fastrand::u16(..))
}

impl Leadership {
    /// Leadership over `store` as `holder`.
    pub fn new(store: Arc<Store>, holder: String, timings: Timings) -> Leadership {
        Leadership {
            store,
            holder,
            timings,
            held: Mutex::new(BTreeMap::new()),
            leaders: Mutex::new(BTreeMap::new()),
        }
    }

    /// This daemon's name in the lease rows.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The timings in force.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Whether leadership is shared at all (PostgreSQL); on SQLite this daemon always leads.
    pub fn is_shared(&self) -> bool {
        self.store.is_shared()
    }

    /// Renews (or tries to take) the group's lease; the tick calls this first.
    pub fn renew(&self, group: &str) -> Role {
        if !self.is_shared() {
            return Role::Leader;
        }
        let sent = Instant::now();
        let result = self.store.db.transaction({
            let group = group.to_string();
            let holder = self.holder.clone();
            let lease_ms = self.timings.lease.as_millis() as i64;
            move |conn| -> Result<Renewal, StateError> {
                let row = conn.query_row(
                    "SELECT holder, token, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint
                     FROM leases WHERE grp = ?1 FOR UPDATE",
                    &[group.as_str().into()],
                )?;
                let params: [Value; 3] = [
                    group.as_str().into(),
                    holder.as_str().into(),
                    lease_ms.into(),
                ];
                let Some(row) = row else {
                    let made = conn.query_row(
                        "INSERT INTO leases (grp, holder, token, expires_at)
                         VALUES (?1, ?2, 1, now() + ?3 * interval '1 millisecond')
                         ON CONFLICT (grp) DO NOTHING RETURNING token",
                        &params,
                    )?;
                    return Ok(match made {
                        Some(row) => Renewal::Took {
                            token: row.int(0)?,
                            from: None,
                            expired_ms_ago: 0,
                        },
                        None => Renewal::Other {
                            holder: "another daemon".into(),
                        },
                    });
                };
                let (current, token, remaining_ms) = (row.text(0)?, row.int(1)?, row.int(2)?);
                if current == holder {
                    conn.execute(
                        "UPDATE leases SET expires_at = now() + ?3 * interval '1 millisecond'
                         WHERE grp = ?1 AND holder = ?2",
                        &params,
                    )?;
                    return Ok(Renewal::Kept { token });
                }
                if remaining_ms > 0 {
                    return Ok(Renewal::Other { holder: current });
                }
                conn.execute(
                    "UPDATE leases SET holder = ?2, token = token + 1,
                         expires_at = now() + ?3 * interval '1 millisecond'
                     WHERE grp = ?1",
                    &params,
                )?;
                Ok(Renewal::Took {
                    token: token + 1,
                    from: Some(current),
                    expired_ms_ago: -remaining_ms,
                })
            }
        });
        self.settle_renewal(group, sent, result)
    }

    fn settle_renewal(
        &self,
        group: &str,
        sent: Instant,
        result: Result<Renewal, StateError>,
    ) -> Role {
        let valid_until = sent + self.timings.lease - self.timings.margin();
        let mut held = match self.held.lock() {
            Ok(held) => held,
            Err(e) => {
                return Role::Unknown {
                    error: e.to_string(),
                };
            }
        };
        let had = held.get(group).copied();
        let role = match result {
            Err(error) => {
                // The lease may still be ours until `valid_until` of the last renewal; writes
                // check that on their own. No new decision acts meanwhile.
                return Role::Unknown {
                    error: error.to_string(),
                };
            }
            Ok(Renewal::Kept { token }) => {
                let act_after = had.map_or(sent, |h| h.act_after);
                held.insert(
                    group.to_string(),
                    Held {
                        token,
                        valid_until,
                        act_after,
                    },
                );
                self.store.set_token(group, Some(token));
                if Instant::now() < act_after {
                    Role::TakingOver {
                        from: self.leader(group).unwrap_or_default(),
                    }
                } else {
                    Role::Leader
                }
            }
            Ok(Renewal::Took {
                token,
                from,
                expired_ms_ago,
            }) => {
                // Whatever the old holder sent before its lease ran out has been answered or
                // abandoned once its longest request has passed since the expiry.
                let wait = match &from {
                    Some(_) => self
                        .timings
                        .longest_request
                        .saturating_sub(Duration::from_millis(expired_ms_ago.max(0) as u64)),
                    None => Duration::ZERO,
                };
                held.insert(
                    group.to_string(),
                    Held {
                        token,
                        valid_until,
                        act_after: sent + wait,
                    },
                );
                self.store.set_token(group, Some(token));
                tracing::info!(
                    group,
                    token,
                    from = from.as_deref().unwrap_or("nobody"),
                    wait_s = wait.as_secs_f64(),
                    "took the group's lease"
                );
                match from {
                    Some(from) if !wait.is_zero() => Role::TakingOver { from },
                    _ => Role::Leader,
                }
            }
            Ok(Renewal::Other { holder }) => {
                if held.remove(group).is_some() {
                    self.store.set_token(group, None);
                    tracing::warn!(group, leader = %holder, "lost the group's lease: another daemon leads it now");
                }
                if let Ok(mut leaders) = self.leaders.lock() {
                    leaders.insert(group.to_string(), holder.clone());
                }
                return Role::Follower { holder };
            }
        };
        if let Ok(mut leaders) = self.leaders.lock() {
            leaders.insert(group.to_string(), self.holder.clone());
        }
        role
    }

    /// The fencing token this daemon holds for `group`, if it holds the lease.
    pub fn token(&self, group: &str) -> Option<i64> {
        self.held.lock().ok()?.get(group).map(|h| h.token)
    }

    /// Whether this daemon may send a DigitalOcean write for `group` now: it holds the lease,
    /// any takeover wait is over, and the lease has the longest request plus the margin left.
    pub fn may_write(&self, group: &str) -> Result<(), String> {
        if !self.is_shared() {
            return Ok(());
        }
        let held = self
            .held
            .lock()
            .map_err(|e| e.to_string())?
            .get(group)
            .copied();
        let Some(held) = held else {
            return Err(format!(
                "this daemon does not lead group `{group}`: not writing to DigitalOcean"
            ));
        };
        let now = Instant::now();
        if now < held.act_after {
            return Err(format!(
                "this daemon took group `{group}` over moments ago and waits {:.1}s more for the old leader's last request",
                (held.act_after - now).as_secs_f64()
            ));
        }
        let needed = self.timings.longest_request + self.timings.margin();
        let left = held.valid_until.saturating_duration_since(now);
        if left < needed {
            return Err(format!(
                "group `{group}`'s lease has {:.1}s left, less than the longest request plus the margin ({:.1}s): not writing to DigitalOcean until it is renewed",
                left.as_secs_f64(),
                needed.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// A gate for the DigitalOcean client that asks [`Leadership::may_write`] for `group`
    /// immediately before each write it sends.
    pub fn write_gate(self: &Arc<Self>, group: &str) -> crate::digitalocean::client::WriteGate {
        let (leadership, group) = (self.clone(), group.to_string());
        Arc::new(move || leadership.may_write(&group))
    }

    /// Who led `group` at the last renewal (this daemon's own name when it leads).
    pub fn leader(&self, group: &str) -> Option<String> {
        self.leaders.lock().ok()?.get(group).cloned()
    }

    /// Whether this daemon holds the group's lease (by its own clock).
    pub fn leads(&self, group: &str) -> bool {
        if !self.is_shared() {
            return true;
        }
        self.held
            .lock()
            .ok()
            .and_then(|held| held.get(group).copied())
            .is_some_and(|h| Instant::now() < h.valid_until)
    }

    /// Gives the group's lease up (a clean stop), so another daemon takes over without
    /// waiting out the lease.
    pub fn release(&self, group: &str) {
        if !self.is_shared() {
            return;
        }
        let had = self
            .held
            .lock()
            .ok()
            .and_then(|mut held| held.remove(group));
        if had.is_none() {
            return;
        }
        self.store.set_token(group, None);
        let result = self.store.db.execute(
            "UPDATE leases SET expires_at = now() WHERE grp = ?1 AND holder = ?2",
            vec![group.into(), self.holder.as_str().into()],
        );
        match result {
            Ok(_) => tracing::info!(group, "released the group's lease"),
            Err(error) => {
                tracing::warn!(group, %error, "cannot release the group's lease; it lapses on its own")
            }
        }
    }
}

/// What a renewal found.
enum Renewal {
    /// This daemon held it and renewed it.
    Kept { token: i64 },
    /// This daemon took it, from nobody or from a holder whose lease had run out.
    Took {
        token: i64,
        from: Option<String>,
        expired_ms_ago: i64,
    },
    /// Another daemon holds it.
    Other { holder: String },
}

/// Who holds each group's lease, read from the store (for `plan` and `state` commands).
pub fn current_leaders(store: &Store) -> Result<BTreeMap<String, (String, bool)>, StateError> {
    if !store.is_shared() {
        return Ok(BTreeMap::new());
    }
    let rows = store.db.query(
        "SELECT grp, holder, (expires_at > now())::int FROM leases",
        Vec::new(),
    )?;
    rows.iter()
        .map(|row| Ok((row.text(0)?, (row.text(1)?, row.int(2)? != 0))))
        .collect()
}
