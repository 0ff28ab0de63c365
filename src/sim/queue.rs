//! The queue workload (`sim --workload queue`): jobs arrive at the demand curve's rate (per
//! second), wait in a queue, and run `job_seconds` each on droplets that take `concurrency`
//! at once, as CI agents and queue workers do. The sim serves what Drone's and GitLab Runner's
//! `/metrics` would show, and counts jobs lost to a droplet destroyed while it ran them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The queue workload's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueSettings {
    /// How long one job runs, in seconds.
    pub job_seconds: f64,
    /// Jobs one droplet runs at once.
    pub concurrency: u32,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            job_seconds: 60.0,
            concurrency: 2,
        }
    }
}

/// What happened to the jobs, for tests and `GET /v2/_sim/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QueueCounts {
    /// Jobs waiting for a free slot.
    pub pending: u64,
    /// Jobs running now.
    pub running: u64,
    /// Jobs that arrived.
    pub arrived: u64,
    /// Jobs that ran to the end.
    pub completed: u64,
    /// Jobs lost because their droplet was destroyed while running them.
    pub killed: u64,
    /// Droplets destroyed while running at least one job.
    pub busy_destroyed: u64,
    /// The longest a job has waited in the queue, in seconds.
    pub longest_wait_seconds: f64,
}

/// The queue and the jobs each droplet runs.
#[derive(Debug, Clone)]
pub struct Queue {
    /// Settings.
    pub settings: QueueSettings,
    /// Arrival times (seconds since the sim started) of the waiting jobs, oldest first.
    waiting: std::collections::VecDeque<f64>,
    /// Fractional arrivals carried to the next step.
    carry: f64,
    /// Remaining seconds of each running job, by droplet.
    running: BTreeMap<u64, Vec<f64>>,
    counts: QueueCounts,
}

impl Queue {
    /// An empty queue.
    pub fn new(settings: QueueSettings) -> Queue {
        Queue {
            settings,
            waiting: Default::default(),
            carry: 0.0,
            running: BTreeMap::new(),
            counts: QueueCounts::default(),
        }
    }

    /// Moves `dt` seconds forward at `now` (seconds since start): jobs finish, `rate` jobs per
    /// second arrive, and waiting jobs start on `active` droplets with a free slot (a random
    /// one, as agents poll in no order).
    pub fn step(&mut self, now: f64, dt: f64, rate: f64, active: &[u64], rng: &mut fastrand::Rng) {
        for jobs in self.running.values_mut() {
            for remaining in jobs.iter_mut() {
                *remaining -= dt;
            }
            let before = jobs.len();
            jobs.retain(|r| *r > 1e-9);
            self.counts.completed += (before - jobs.len()) as u64;
        }
        // A droplet no longer active (powered off behind the sim's back) lost its jobs.
        let alive: std::collections::HashSet<u64> = active.iter().copied().collect();
        let counts = &mut self.counts;
        self.running.retain(|id, jobs| {
            if !alive.contains(id) && !jobs.is_empty() {
                counts.killed += jobs.len() as u64;
                counts.busy_destroyed += 1;
                return false;
            }
            !jobs.is_empty()
        });
        self.carry += rate.max(0.0) * dt;
        let arrivals = self.carry.floor();
        self.carry -= arrivals;
        for _ in 0..arrivals as u64 {
            self.waiting.push_back(now);
        }
        self.counts.arrived += arrivals as u64;
        let capacity = self.settings.concurrency as usize;
        let mut free: Vec<u64> = active
            .iter()
            .copied()
            .filter(|id| self.running.get(id).map_or(0, Vec::len) < capacity)
            .collect();
        while !free.is_empty() {
            let Some(arrived) = self.waiting.pop_front() else {
                break;
            };
            self.counts.longest_wait_seconds = self.counts.longest_wait_seconds.max(now - arrived);
            let index = rng.usize(..free.len());
            let id = free[index];
            let jobs = self.running.entry(id).or_default();
            jobs.push(self.settings.job_seconds);
            if jobs.len() >= capacity {
                free.swap_remove(index);
            }
        }
    }

    /// Jobs running on a droplet.
    pub fn running_on(&self, id: u64) -> u32 {
        self.running.get(&id).map_or(0, |jobs| jobs.len() as u32)
    }

    /// A droplet is destroyed: its jobs are lost (counted).
    pub fn remove(&mut self, id: u64) {
        if let Some(jobs) = self.running.remove(&id)
            && !jobs.is_empty()
        {
            self.counts.killed += jobs.len() as u64;
            self.counts.busy_destroyed += 1;
        }
    }

    /// The counts now.
    pub fn counts(&self) -> QueueCounts {
        QueueCounts {
            pending: self.waiting.len() as u64,
            running: self.running.values().map(|j| j.len() as u64).sum(),
            ..self.counts
        }
    }

    /// What a Drone server's `/metrics` shows of the queue.
    pub fn render_drone(&self) -> String {
        let counts = self.counts();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP drone_pending_builds Total number of pending builds.\n# TYPE drone_pending_builds gauge\ndrone_pending_builds {}",
            counts.pending
        );
        let _ = writeln!(
            out,
            "# HELP drone_running_builds Total number of running builds.\n# TYPE drone_running_builds gauge\ndrone_running_builds {}",
            counts.running
        );
        out
    }

    /// What a GitLab runner manager's `/metrics` shows: its running jobs and its concurrency
    /// over `active` droplets.
    pub fn render_gitlab(&self, active: usize) -> String {
        let counts = self.counts();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP gitlab_runner_jobs The current number of running builds.\n# TYPE gitlab_runner_jobs gauge\ngitlab_runner_jobs{{executor_stage=\"\",runner=\"sim\",stage=\"\",state=\"running\",system_id=\"sim\"}} {}",
            counts.running
        );
        let _ = writeln!(
            out,
            "# HELP gitlab_runner_concurrent The current value of concurrent setting\n# TYPE gitlab_runner_concurrent gauge\ngitlab_runner_concurrent {}",
            active as u64 * u64::from(self.settings.concurrency)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_arrive_wait_run_and_finish_and_a_destroyed_busy_droplet_loses_its_jobs() {
        let mut queue = Queue::new(QueueSettings {
            job_seconds: 10.0,
            concurrency: 2,
        });
        let mut rng = fastrand::Rng::with_seed(1);
        // 1 job per second for 5 s with one droplet: 2 run, 3 wait.
        for t in 0..5 {
            queue.step(t as f64, 1.0, 1.0, &[7], &mut rng);
        }
        let counts = queue.counts();
        assert_eq!((counts.arrived, counts.running, counts.pending), (5, 2, 3));
        assert_eq!(queue.running_on(7), 2);
        // No more arrivals: after 10 s the first two are done and two more start.
        for t in 5..16 {
            queue.step(t as f64, 1.0, 0.0, &[7], &mut rng);
        }
        let counts = queue.counts();
        assert_eq!(
            (counts.completed, counts.running, counts.pending),
            (2, 2, 1)
        );
        // The third job arrived at 2 s and started at 10 s, when the first finished.
        assert_eq!(counts.longest_wait_seconds, 8.0, "{counts:?}");
        queue.remove(7);
        let counts = queue.counts();
        assert_eq!(
            (counts.killed, counts.busy_destroyed, counts.running),
            (2, 1, 0)
        );
        assert!(queue.render_drone().contains("drone_pending_builds 1"));
        assert!(
            queue
                .render_gitlab(3)
                .contains("gitlab_runner_concurrent 6")
        );
    }
}
