//! The decision, table by table, with an injected clock; invariants under generated input; and
//! two scenarios driven through a small closed-loop model.

use chrono::{DateTime, Duration as Span, Utc};
use do_scaler::config::{Group, group_from_toml};
use do_scaler::policy::{
    Decision, Direction, GroupMemory, Input, Member, MemberState, Observation, Truth, Work, decide,
};
use proptest::prelude::*;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

const TEMPLATE: &str =
    "[droplet]\nregion = \"nyc3\"\nsize = \"s-1vcpu-1gb\"\nimage = \"ubuntu-24-04-x64\"\n";

fn group(body: &str) -> Group {
    group_from_toml("web", &format!("tag = \"web\"\n{body}\n{TEMPLATE}"))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn target_group(extra: &str) -> Group {
    target_group_max(10, extra)
}

fn target_group_max(max: u32, extra: &str) -> Group {
    group(&format!(
        "min = 1\nmax = {max}\n{extra}\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\n"
    ))
}

fn member(id: u64, state: MemberState, age_minutes: i64) -> Member {
    Member {
        id,
        name: format!("web-{id}"),
        created_at: t0() - Span::minutes(age_minutes),
        state,
        managed: true,
        protected: false,
        busy: None,
        scraped: true,
        work: Work::Unjudged,
    }
}

fn active(n: u64) -> Vec<Member> {
    (1..=n)
        .map(|id| member(id, MemberState::Active, 60 + id as i64))
        .collect()
}

fn run(
    group: &Group,
    members: &[Member],
    observations: &[Observation],
    now: DateTime<Utc>,
    memory: &mut GroupMemory,
) -> Decision {
    decide(
        &Input {
            group,
            members,
            observations,
            unread: &[],
            now,
        },
        memory,
    )
}

fn once(group: &Group, members: &[Member], observations: &[Observation]) -> Decision {
    run(
        group,
        members,
        observations,
        t0(),
        &mut GroupMemory::default(),
    )
}

#[test]
fn target_rules() {
    let g = target_group("");
    // (active, booting, value, expected desired)
    for (active_n, booting_n, value, expected, why) in [
        (2, 0, 0.9, 3, "ceil(2 × 0.9 / 0.6) = 3"),
        (2, 0, 0.63, 2, "2.1 wanted, within the 10 % tolerance of 2"),
        (
            10,
            0,
            0.65,
            10,
            "10.8 wanted, within the 10 % tolerance of 10",
        ),
        (8, 0, 0.7, 10, "9.33 wanted, outside the tolerance: ceil"),
        (
            2,
            2,
            1.0,
            4,
            "booting droplets count: ceil(2 × 1 / 0.6) = 4 = current",
        ),
        (4, 0, 0.15, 1, "ceil(4 × 0.15 / 0.6) = 1"),
        (3, 0, 0.6, 3, "at the target"),
    ] {
        let mut members = active(active_n);
        members.extend((100..100 + booting_n).map(|id| member(id, MemberState::Booting, 1)));
        let d = once(&g, &members, &[Observation::Number(value)]);
        assert_eq!(d.desired, expected, "{why}: {:#?}", d.steps);
    }
}

#[test]
fn per_droplet_targets_and_step_limits() {
    let g = group(
        "min = 1\nmax = 20\n[[rule]]\nname = \"queue\"\nexpr = 'sum(q)'\ntarget = 100\nper_droplet = true\nmax_step_up = 3\nmax_step_down = 1\n",
    );
    assert_eq!(
        once(&g, &active(2), &[Observation::Number(350.0)]).desired,
        4,
        "ceil(350/100) = 4"
    );
    assert_eq!(
        once(&g, &active(2), &[Observation::Number(1000.0)]).desired,
        5,
        "at most +3"
    );
    let d = once(&g, &active(6), &[Observation::Number(100.0)]);
    assert_eq!(d.desired, 5, "at most -1: {:#?}", d.steps);
}

/// Issue 22, part 5: a target rule whose value is at its ceiling grows by its saturated step
/// from the droplets it measured, past `max_step_up`, never counting booting droplets twice
/// and never shrinking; below the ceiling it is an ordinary target rule.
#[test]
fn a_saturated_target_rule_grows_by_its_step() {
    let saturated = |step: &str| {
        group(&format!(
            "min = 1\nmax = 40\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\nmax_step_up = 1\nceiling = 1.0\n{step}"
        ))
    };
    let doubling = saturated("");
    // (active, booting, value, expected desired, why)
    for (active_n, booting_n, value, expected, why) in [
        (4, 0, 1.0, 8, "+100 % of 4 active, past max_step_up 1"),
        (4, 0, 0.985, 8, "within 2 % of the ceiling counts"),
        (
            4,
            0,
            0.95,
            5,
            "below the band: ceil(4 × 0.95 / 0.6) = 7, max_step_up 1",
        ),
        (
            4,
            4,
            1.0,
            8,
            "4 booting already make the +100 %: hold, not 16",
        ),
        (4, 6, 1.0, 10, "never below the current size"),
    ] {
        let mut members = active(active_n);
        members.extend((100..100 + booting_n).map(|id| member(id, MemberState::Booting, 1)));
        let d = once(&doubling, &members, &[Observation::Number(value)]);
        assert_eq!(d.desired, expected, "{why}: {:#?}", d.steps);
    }
    let plus_ten = saturated("saturated_step = \"+10\"\n");
    assert_eq!(
        once(&plus_ten, &active(4), &[Observation::Number(1.0)]).desired,
        14
    );
    // The up cooldown paces ordinary scale-ups, not a saturated rule's (it grows only from
    // droplets already measured).
    let cooling = group(
        "min = 1\nmax = 40\n[cooldown]\nup = \"10m\"\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\nceiling = 1.0\n",
    );
    let after_an_up = || GroupMemory {
        last_up: Some(t0() - Span::minutes(1)),
        ..GroupMemory::default()
    };
    let d = run(
        &cooling,
        &active(4),
        &[Observation::Number(1.0)],
        t0(),
        &mut after_an_up(),
    );
    assert_eq!(d.desired, 8, "{:#?}", d.steps);
    let d = run(
        &cooling,
        &active(4),
        &[Observation::Number(0.9)],
        t0(),
        &mut after_an_up(),
    );
    assert_eq!(
        d.desired, 4,
        "below the ceiling the cooldown holds: {:#?}",
        d.steps
    );
    let explained = once(&doubling, &active(4), &[Observation::Number(1.0)]);
    assert!(
        explained.rules[0].verdict.contains("saturated"),
        "{:#?}",
        explained.rules
    );
}

#[test]
fn saturation_keys_are_refused_where_they_cannot_apply() {
    for (body, wanted) in [
        (
            "[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\nsaturated_step = \"+2\"\n",
            "saturated_step needs `ceiling`",
        ),
        (
            "[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\nceiling = 0.5\n",
            "is not above the target",
        ),
        (
            "[[rule]]\nname = \"q\"\nexpr = 'sum(x)'\ntarget = 10\nper_droplet = true\nceiling = 100\n",
            "does not apply to a per_droplet rule",
        ),
        (
            "[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\nceiling = 1\nsaturated_step = \"-1\"\n",
            "must grow the group",
        ),
        (
            "[[rule]]\nname = \"busy\"\nwhen = 'avg(x) > 1'\nchange = \"+1\"\nceiling = 1\n",
            "so `ceiling` does not apply",
        ),
    ] {
        let error = group_from_toml(
            "web",
            &format!("tag = \"web\"\nmin = 1\nmax = 5\n{body}{TEMPLATE}"),
        )
        .expect_err(body);
        let text = format!("{error:?}");
        assert!(text.contains(wanted), "{wanted}: {text}");
    }
}

fn threshold_group(condition: &str, hold: &str, change: &str) -> Group {
    group(&format!(
        "min = 1\nmax = 10\n[[rule]]\nname = \"t\"\n{condition}\nfor = \"{hold}\"\nchange = \"{change}\"\n"
    ))
}

#[test]
fn threshold_rules_fire_after_holding_for_their_duration() {
    let g = threshold_group("when = 'x > 1'", "2m", "+2");
    let mut memory = GroupMemory::default();
    let yes = [Observation::Conditions(vec![Truth::True])];
    let no = [Observation::Conditions(vec![Truth::False])];
    let members = active(2);
    assert_eq!(
        run(&g, &members, &yes, t0(), &mut memory).desired,
        2,
        "true for 0s"
    );
    assert_eq!(
        run(&g, &members, &yes, t0() + Span::seconds(60), &mut memory).desired,
        2,
        "true for 1m"
    );
    assert_eq!(
        run(&g, &members, &no, t0() + Span::seconds(90), &mut memory).desired,
        2,
        "false resets"
    );
    assert_eq!(
        run(&g, &members, &yes, t0() + Span::seconds(120), &mut memory).desired,
        2
    );
    assert_eq!(
        run(&g, &members, &yes, t0() + Span::seconds(240), &mut memory).desired,
        4,
        "true for 2m: +2"
    );
}

#[test]
fn changes_round_away_from_zero_and_move_at_least_one() {
    for (change, current, expected) in [
        ("+50%", 3, 5),
        ("-25%", 3, 2),
        ("+10%", 2, 3),
        ("-50%", 4, 2),
        ("+1", 3, 4),
        ("-2", 5, 3),
    ] {
        let g = threshold_group("when = 'x > 1'", "0s", change);
        let d = once(
            &g,
            &active(current),
            &[Observation::Conditions(vec![Truth::True])],
        );
        assert_eq!(d.desired, expected, "{change} of {current}: {:#?}", d.steps);
    }
}

#[test]
fn three_valued_logic_for_when_all_and_when_any() {
    let missing = || Truth::Missing("no data".into());
    for (key, truths, fires) in [
        ("when_all", vec![Truth::True, Truth::True], Some(true)),
        ("when_all", vec![Truth::True, missing()], None),
        ("when_all", vec![Truth::False, missing()], Some(false)),
        ("when_any", vec![Truth::False, Truth::True], Some(true)),
        ("when_any", vec![missing(), Truth::True], Some(true)),
        ("when_any", vec![Truth::False, missing()], None),
        ("when_any", vec![Truth::False, Truth::False], Some(false)),
    ] {
        let g = threshold_group(&format!("{key} = ['a > 1', 'b > 1']"), "0s", "+1");
        let d = once(&g, &active(2), &[Observation::Conditions(truths.clone())]);
        match fires {
            Some(true) => assert_eq!(d.desired, 3, "{key} {truths:?}"),
            Some(false) => assert_eq!(
                (d.desired, d.rules[0].value.as_str()),
                (2, "false"),
                "{key} {truths:?}"
            ),
            None => assert_eq!(
                (d.desired, d.rules[0].value.as_str()),
                (2, "missing"),
                "{key} {truths:?}"
            ),
        }
    }
}

#[test]
fn up_beats_hold_beats_down() {
    let g = group(
        "min = 1\nmax = 10\n[[rule]]\nname = \"up\"\nwhen = 'a > 1'\nchange = \"+1\"\n[[rule]]\nname = \"big-up\"\nwhen = 'b > 1'\nchange = \"+3\"\n[[rule]]\nname = \"down\"\nwhen = 'c < 1'\nchange = \"-1\"\n[[rule]]\nname = \"big-down\"\nwhen = 'd < 1'\nchange = \"-3\"\n[[rule]]\nname = \"hold\"\nexpr = 'avg(e)'\ntarget = 0.5\n",
    );
    let t = || Observation::Conditions(vec![Truth::True]);
    let f = || Observation::Conditions(vec![Truth::False]);
    let members = active(5);
    let d = once(
        &g,
        &members,
        &[t(), t(), t(), t(), Observation::Number(0.5)],
    );
    assert_eq!(
        (d.desired, d.winner.as_deref()),
        (8, Some("big-up")),
        "the largest up wins"
    );
    let d = once(
        &g,
        &members,
        &[f(), f(), t(), t(), Observation::Number(0.5)],
    );
    assert_eq!(d.desired, 5, "a rule holding beats any down");
    let d = once(
        &g,
        &members,
        &[f(), f(), t(), t(), Observation::Missing("gone".into())],
    );
    assert_eq!(d.desired, 5, "missing data holds and so blocks downs");
    let g2 = group(
        "min = 1\nmax = 10\n[[rule]]\nname = \"down\"\nwhen = 'c < 1'\nchange = \"-1\"\n[[rule]]\nname = \"big-down\"\nwhen = 'd < 1'\nchange = \"-3\"\n[stabilization]\ndown = \"0s\"\n",
    );
    let d = once(&g2, &members, &[t(), t()]);
    assert_eq!(
        (d.desired, d.winner.as_deref()),
        (4, Some("down")),
        "among downs the smallest step wins"
    );
}

#[test]
fn bounds_and_schedules_apply_without_any_rule() {
    let g = group("min = 2\nmax = 4\n");
    assert_eq!(once(&g, &[], &[]).desired, 2, "an empty group goes to min");
    assert_eq!(
        once(&g, &active(6), &[]).desired,
        4,
        "above max goes back to max"
    );
    let scheduled = group(
        "min = 1\nmax = 8\n[[schedule]]\ncron = \"0 11 * * *\"\ntimezone = \"Europe/Berlin\"\nduration = \"2h\"\nmin = 5\n",
    );
    // 12:00 UTC is 14:00 in Berlin in June: the window 11:00–13:00 local is closed.
    assert_eq!(once(&scheduled, &active(2), &[]).desired, 2);
    let d = run(
        &scheduled,
        &active(2),
        &[],
        t0() - Span::hours(2) - Span::minutes(30),
        &mut GroupMemory::default(),
    );
    assert_eq!(
        (d.desired, d.bounds.schedule.as_deref()),
        (5, Some("schedule-1")),
        "{:#?}",
        d.steps
    );
}

#[test]
fn cooldowns_hold_but_bounds_override_them() {
    let g = target_group("[cooldown]\nup = \"3m\"\ndown = \"5m\"\n");
    let mut memory = GroupMemory {
        last_up: Some(t0() - Span::minutes(1)),
        last_down: Some(t0() - Span::minutes(1)),
        ..GroupMemory::default()
    };
    let d = run(
        &g,
        &active(2),
        &[Observation::Number(1.0)],
        t0(),
        &mut memory,
    );
    assert_eq!(d.desired, 2, "{:#?}", d.steps);
    assert!(d.steps.iter().any(|s| s.contains("up cooldown")));
    let bounded = group("min = 3\nmax = 5\n[cooldown]\nup = \"1h\"\n");
    let mut memory = GroupMemory {
        last_up: Some(t0()),
        ..GroupMemory::default()
    };
    assert_eq!(
        run(&bounded, &active(1), &[], t0(), &mut memory).desired,
        3,
        "min is restored whatever the cooldown"
    );
    let mut memory = GroupMemory {
        last_up: Some(t0() - Span::minutes(4)),
        ..GroupMemory::default()
    };
    assert_eq!(
        run(
            &g,
            &active(2),
            &[Observation::Number(1.0)],
            t0(),
            &mut memory
        )
        .desired,
        4,
        "cooldown over"
    );
}

#[test]
fn scale_down_uses_the_highest_recommendation_of_its_window() {
    let g = target_group("[stabilization]\ndown = \"5m\"\n[cooldown]\ndown = \"0s\"\n");
    let mut memory = GroupMemory::default();
    let members = active(4);
    assert_eq!(
        run(&g, &members, &[Observation::Number(0.6)], t0(), &mut memory).desired,
        4
    );
    let d = run(
        &g,
        &members,
        &[Observation::Number(0.15)],
        t0() + Span::minutes(2),
        &mut memory,
    );
    assert_eq!(
        d.desired, 4,
        "4 was recommended 2 minutes ago: {:#?}",
        d.steps
    );
    let d = run(
        &g,
        &members,
        &[Observation::Number(0.15)],
        t0() + Span::minutes(6),
        &mut memory,
    );
    assert_eq!(d.desired, 1, "the window has passed: {:#?}", d.steps);
}

#[test]
fn a_rule_that_read_only_part_of_the_group_blocks_a_scale_down_but_not_a_scale_up() {
    let g = target_group("");
    let members = active(4);
    // The rule read three droplets at 10 %: a scale-down if the fourth had given its series.
    let idle = [Observation::Number(0.1)];
    assert_eq!(once(&g, &members, &idle).desired, 1);
    let partial = vec![vec![4u64]];
    let decide_with = |observations: &[Observation]| {
        decide(
            &Input {
                group: &g,
                members: &members,
                observations,
                unread: &partial,
                now: t0(),
            },
            &mut GroupMemory::default(),
        )
    };
    let held = decide_with(&idle);
    assert_eq!(held.desired, 4, "{:?}", held.steps);
    assert!(
        held.steps
            .iter()
            .any(|s| s.contains("no scale-down on partial data") && s.contains('4')),
        "{:?}",
        held.steps
    );
    let busy = [Observation::Number(0.9)];
    assert_eq!(decide_with(&busy).desired, 6);
}

#[test]
fn missing_data_holds_scales_up_or_goes_to_a_floor_but_never_down() {
    let missing = [Observation::Missing("warming".into())];
    let hold = target_group("");
    assert_eq!(once(&hold, &active(3), &missing).desired, 3);
    let up = target_group("on_missing = \"scale_up\"");
    assert_eq!(once(&up, &active(3), &missing).desired, 4);
    let floor = target_group("on_missing = { desired = 2 }");
    assert_eq!(
        once(&floor, &active(3), &missing).desired,
        3,
        "desired 2 never lowers 3"
    );
    assert_eq!(once(&floor, &active(1), &missing).desired, 2);
    let from_zero = group(
        "min = 0\nmax = 5\non_missing = { desired = 2 }\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.5\n",
    );
    assert_eq!(
        once(&from_zero, &[], &missing).desired,
        2,
        "a min = 0 group restarts through on_missing"
    );
}

#[test]
fn failures_back_off_and_the_spend_guard_caps_creates() {
    let g = target_group("max_creates_per_hour = 3");
    let mut memory = GroupMemory::default();
    memory.up_failed(t0() - Span::seconds(30));
    let d = run(
        &g,
        &active(2),
        &[Observation::Number(1.0)],
        t0(),
        &mut memory,
    );
    assert_eq!(d.desired, 2);
    assert!(
        d.steps.iter().any(|s| s.contains("failure backoff")),
        "{:#?}",
        d.steps
    );
    assert_eq!(
        run(
            &g,
            &active(2),
            &[Observation::Number(1.0)],
            t0() + Span::minutes(2),
            &mut memory
        )
        .desired,
        4
    );
    let mut memory = GroupMemory::default();
    memory.created(2, t0() - Span::minutes(30));
    let d = run(
        &g,
        &active(2),
        &[Observation::Number(3.0)],
        t0(),
        &mut memory,
    );
    assert_eq!(
        d.desired, 3,
        "only one more create this hour: {:#?}",
        d.steps
    );
}

#[test]
fn victims_are_managed_unprotected_old_enough_and_in_order() {
    let base = "min = 0\nmax = 10\n[stabilization]\ndown = \"0s\"\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.5\n";
    let mut members = active(5);
    members[0].managed = false;
    members[1].protected = true;
    members[4].created_at = t0() - Span::minutes(1);
    let oldest = group(&format!(
        "{base}[scale_in]\nchoose = \"oldest\"\nmin_age = \"10m\"\n"
    ));
    // 5 droplets at 0.1 want 1: 4 to remove, but only ids 3 and 4 may go.
    let d = once(&oldest, &members, &[Observation::Number(0.1)]);
    assert_eq!(d.victims, [4, 3], "oldest first");
    assert_eq!(d.desired, 3);
    assert!(
        d.steps
            .iter()
            .any(|s| s.contains("only 2 droplet(s) may be removed")),
        "{:#?}",
        d.steps
    );
    let newest = group(&format!(
        "{base}[scale_in]\nchoose = \"newest\"\nmin_age = \"0s\"\n"
    ));
    let d = once(&newest, &active(4), &[Observation::Number(0.25)]);
    assert_eq!(
        d.victims,
        [1, 2],
        "newest first (id 1 is the youngest here)"
    );
    let busy = group(&format!(
        "{base}[scale_in]\nchoose = \"least_busy\"\nby = 'avg by (droplet_id) (x)'\nmin_age = \"0s\"\n"
    ));
    let mut members = active(4);
    for (m, busy) in members
        .iter_mut()
        .zip([Some(0.9), None, Some(0.1), Some(0.5)])
    {
        m.busy = busy;
    }
    let d = once(&busy, &members, &[Observation::Number(0.25)]);
    assert_eq!(
        d.victims,
        [3, 4],
        "least busy first, droplets without a value last"
    );
}

/// The closed loop: `demand` is in droplets' worth at the target, so the rule's value is
/// demand × target / active; the decision is carried out at once (booting skipped).
fn simulate(
    g: &Group,
    demand: impl Fn(usize) -> f64,
    ticks: usize,
    seconds_per_tick: i64,
) -> Vec<(usize, Direction, u32, u32)> {
    let mut memory = GroupMemory::default();
    let mut size = 2u32;
    let mut next_id = 100;
    let mut members = active(2);
    let mut events = Vec::new();
    for tick in 0..ticks {
        let now = t0() + Span::seconds(tick as i64 * seconds_per_tick);
        let value = demand(tick) * 0.6 / size as f64;
        let d = run(g, &members, &[Observation::Number(value)], now, &mut memory);
        if let Some(direction) = d.direction {
            events.push((tick, direction, size, d.desired));
            if direction == Direction::Up {
                for _ in size..d.desired {
                    next_id += 1;
                    members.push(Member {
                        created_at: now - Span::hours(1),
                        ..member(next_id, MemberState::Active, 0)
                    });
                }
            } else {
                members.retain(|m| !d.victims.contains(&m.id));
            }
            size = d.desired;
            memory.scaled(direction, now);
        }
    }
    events
}

#[test]
fn scenario_a_step_up_and_back_with_noise_scales_a_few_times_and_never_flaps() {
    let g = target_group_max(12, "[scale_in]\nmin_age = \"0s\"");
    let mut rng = fastrand::Rng::with_seed(7);
    let noise: Vec<f64> = (0..400).map(|_| 1.0 + (rng.f64() - 0.5) * 0.2).collect();
    // 30 s ticks: 2 droplets' worth for 20 minutes, 8 for an hour, then 2 for an hour.
    let demand = |tick: usize| {
        let base = if tick < 40 {
            2.0
        } else if tick < 160 {
            8.0
        } else {
            2.0
        };
        base * noise[tick]
    };
    let events = simulate(&g, demand, 400, 30);
    let ups = events.iter().filter(|e| e.1 == Direction::Up).count();
    let downs = events.iter().filter(|e| e.1 == Direction::Down).count();
    assert!(ups <= 2 && downs <= 2, "{events:?}");
    assert!(ups >= 1 && downs >= 1, "{events:?}");
    for pair in events.windows(2) {
        if pair[0].1 != pair[1].1 {
            let gap = (pair[1].0 - pair[0].0) as i64 * 30;
            assert!(
                gap >= 300,
                "a reversal {gap}s after the last event, inside the 5m window: {events:?}"
            );
        }
    }
}

#[test]
fn scenario_b_booting_droplets_stop_the_group_from_asking_again() {
    let g = target_group_max(20, "[cooldown]\nup = \"0s\"");
    let mut memory = GroupMemory::default();
    let mut members = active(2);
    let first = run(&g, &members, &[Observation::Number(1.0)], t0(), &mut memory);
    assert_eq!(first.desired, 4, "ceil(2 × 1.0 / 0.6)");
    members.extend([
        member(50, MemberState::Booting, 0),
        member(51, MemberState::Booting, 0),
    ]);
    memory.scaled(Direction::Up, t0());
    // Three minutes of boot at a 10 s tick, the two old droplets still saturated.
    for tick in 1..=18 {
        let d = run(
            &g,
            &members,
            &[Observation::Number(1.0)],
            t0() + Span::seconds(tick * 10),
            &mut memory,
        );
        assert!(d.desired <= first.desired, "tick {tick}: {:#?}", d.steps);
    }
}

#[test]
fn constant_input_settles_and_then_never_scales() {
    let g = target_group_max(12, "[scale_in]\nmin_age = \"0s\"");
    let events = simulate(&g, |_| 5.0, 1000, 30);
    assert!(
        events.iter().all(|e| e.0 < 50),
        "events after settling: {events:?}"
    );
}

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        (0.0f64..5.0).prop_map(Observation::Number),
        Just(Observation::Missing("gone".into())),
    ]
}

proptest! {
    #[test]
    fn the_decision_stays_within_the_bounds(min in 0u32..5, span in 0u32..8, size in 0u64..15, obs in observation(), minutes in 0i64..2000) {
        let max = min + span;
        let g = group(&format!("min = {min}\nmax = {max}\n[scale_in]\nmin_age = \"0s\"\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\n"));
        let d = run(&g, &active(size), &[obs], t0() + Span::minutes(minutes), &mut GroupMemory::default());
        prop_assert!(d.desired >= d.bounds.min && d.desired <= d.bounds.max, "{:#?}", d);
    }

    #[test]
    fn missing_data_never_scales_down(min in 0u32..3, size in 3u64..12, on_missing in 0usize..3) {
        let on_missing = ["\"hold\"", "\"scale_up\"", "{ desired = 1 }"][on_missing];
        let g = group(&format!("min = {min}\nmax = 20\non_missing = {on_missing}\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\n[[rule]]\nname = \"t\"\nwhen = 'y < 1'\nchange = \"-2\"\n"));
        let missing = [Observation::Missing("no data".into()), Observation::Conditions(vec![Truth::Missing("no data".into())])];
        let d = once(&g, &active(size), &missing);
        prop_assert!(d.desired >= size as u32, "{:#?}", d);
    }
}

/// Trust at the edges (2): outside the bounds a decision moves only to the bound, remembers the
/// bound as its recommendation, and the brakes decide the rest on later ticks: 10 droplets with
/// max lowered to 8 and a rule wanting 3 go to 8, not to 3, and stay at 8 on the next tick.
#[test]
fn outside_the_bounds_a_decision_moves_only_to_the_bound() {
    let g = target_group_max(8, "[cooldown]\nup = \"2m\"\ndown = \"5m\"\n");
    let mut memory = GroupMemory::default();
    // The rule wants ceil(10 × 0.18 / 0.6) = 3.
    let first = run(
        &g,
        &active(10),
        &[Observation::Number(0.18)],
        t0(),
        &mut memory,
    );
    assert_eq!(first.desired, 8, "{:#?}", first.steps);
    assert_eq!(first.victims.len(), 2);
    assert_eq!(first.winner.as_deref(), Some("max"));
    // The scale-down to max completes: its cooldown starts.
    memory.scaled(Direction::Down, t0() + Span::seconds(20));
    let second = run(
        &g,
        &active(8),
        &[Observation::Number(0.18)],
        t0() + Span::seconds(30),
        &mut memory,
    );
    assert_eq!(second.desired, 8, "{:#?}", second.steps);
    assert!(
        second
            .steps
            .iter()
            .any(|s| s.contains("stabilization") || s.contains("down cooldown")),
        "{:#?}",
        second.steps
    );

    // Below min: min at once whatever the cooldown; the rest of a rule's scale-up only when
    // no up cooldown runs.
    let g = group(
        "min = 4\nmax = 10\n[cooldown]\nup = \"2m\"\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\n",
    );
    // ceil(2 × 1.8 / 0.6) = 6.
    let free = run(
        &g,
        &active(2),
        &[Observation::Number(1.8)],
        t0(),
        &mut GroupMemory::default(),
    );
    assert_eq!(free.desired, 6, "{:#?}", free.steps);
    let mut cooling = GroupMemory {
        last_up: Some(t0() - Span::seconds(30)),
        ..GroupMemory::default()
    };
    let held = run(
        &g,
        &active(2),
        &[Observation::Number(1.8)],
        t0(),
        &mut cooling,
    );
    assert_eq!(held.desired, 4, "{:#?}", held.steps);
    // The next tick, with the group at min and the cooldown still running, holds.
    cooling.scaled(Direction::Up, t0() + Span::seconds(10));
    let next = run(
        &g,
        &active(4),
        &[Observation::Number(1.8)],
        t0() + Span::seconds(30),
        &mut cooling,
    );
    assert_eq!(next.desired, 4, "{:#?}", next.steps);
}

/// Trust at the edges (2): powered-off droplets are billed, so they count toward max: the
/// group is not grown past max around them, they are never victims, and every decision says
/// they are there.
#[test]
fn powered_off_droplets_count_toward_max_and_are_never_removed() {
    let g = group(
        "min = 1\nmax = 3\n[scale_in]\nmin_age = \"0s\"\n[[rule]]\nname = \"cpu\"\nexpr = 'avg(x)'\ntarget = 0.6\n",
    );
    let mut members = active(2);
    members.push(member(3, MemberState::Off, 90));
    // Busy: ceil(2 × 1.2 / 0.6) = 4 wanted, but 2 running + 1 off leave no room under max 3.
    let up = once(&g, &members, &[Observation::Number(1.2)]);
    assert_eq!(up.desired, 2, "{:#?}", up.steps);
    assert!(
        up.steps
            .iter()
            .any(|s| s.contains("powered off") && s.contains('3')),
        "{:#?}",
        up.steps
    );
    // Idle: one droplet may go, never the powered-off one.
    let down = once(&g, &members, &[Observation::Number(0.1)]);
    assert_eq!(down.desired, 1, "{:#?}", down.steps);
    assert!(!down.victims.contains(&3));
}

/// Issue 18: a desired rule proposes the rounded-up number, bounded and braked like any rule;
/// a value that is not a number holds.
#[test]
fn desired_rules_propose_the_number_wanted() {
    let g = group("min = 0\nmax = 8\n[[rule]]\nname = \"queue\"\ndesired = 'x'\n");
    for (value, current, expected) in [(4.2, 2, 5), (0.0, 3, 0), (30.0, 2, 8), (2.0, 2, 2)] {
        let d = once(&g, &active(current), &[Observation::Number(value)]);
        assert_eq!(d.desired, expected, "{value} with {current}: {:?}", d.steps);
    }
    // From nothing: the group starts when work arrives.
    let d = once(&g, &[], &[Observation::Number(1.5)]);
    assert_eq!((d.current, d.desired), (0, 2), "{:?}", d.steps);
    let d = once(&g, &active(3), &[Observation::Missing("no data".into())]);
    assert_eq!(d.desired, 3, "missing data holds");
}

fn idle_group(extra: &str) -> Group {
    group(&format!(
        "min = 0\nmax = 10\n[scale_in]\nmin_age = \"0s\"\n[idle]\ncount = 2\nbusy = 'x > 0'\n{extra}"
    ))
}

fn worker(id: u64, work: Work) -> Member {
    Member {
        work,
        ..member(id, MemberState::Active, 60)
    }
}

/// Issue 18: desired is at least busy + idle count; booting and unknown droplets count as
/// idle there (no runaway growth), and as busy when victims are chosen.
#[test]
fn idle_headroom_keeps_ready_droplets_and_removes_only_idle_ones() {
    let long_ago = t0() - Span::hours(1);
    let g = idle_group("");
    // 2 busy, 2 booting: 2 + 2 = 4 = current, no change (booting ones do not ask for more).
    let mut members = vec![worker(1, Work::Busy), worker(2, Work::Busy)];
    members.extend((100..102).map(|id| Member {
        work: Work::Unknown,
        ..member(id, MemberState::Booting, 1)
    }));
    let d = once(&g, &members, &[]);
    assert_eq!(d.desired, 4, "{:?}", d.steps);
    // 3 busy, no idle: grows to 5.
    let members: Vec<Member> = (1..=3).map(|id| worker(id, Work::Busy)).collect();
    let d = once(&g, &members, &[]);
    assert_eq!(d.desired, 5, "{:?}", d.steps);
    // 1 busy, 1 unknown, 3 idle: wants 1 + 2 = 3 of 5; only idle droplets may go.
    let members = vec![
        worker(1, Work::Busy),
        worker(2, Work::Unknown),
        worker(3, Work::Idle(long_ago)),
        worker(4, Work::Idle(long_ago)),
        worker(5, Work::Idle(long_ago)),
    ];
    let d = once(&g, &members, &[]);
    assert_eq!(d.desired, 3, "{:?}", d.steps);
    assert_eq!(d.victims.len(), 2);
    assert!(d.victims.iter().all(|v| *v >= 3), "{:?}", d.victims);
    // With idle.time, a droplet idle for less may not go.
    let g = idle_group("time = \"20m\"\n");
    let members = vec![
        worker(1, Work::Busy),
        worker(3, Work::Idle(t0() - Span::minutes(5))),
        worker(4, Work::Idle(t0() - Span::minutes(30))),
        worker(5, Work::Idle(t0() - Span::minutes(5))),
    ];
    let d = once(&g, &members, &[]);
    assert_eq!(d.victims, vec![4], "{:?}", d.steps);
    assert_eq!(d.desired, 3);
}

/// Issue 18: a schedule's idle_count replaces the idle count while it is open (off-peak).
#[test]
fn a_schedule_sets_the_idle_count_while_open() {
    let g = idle_group(
        "[[schedule]]\nname = \"off-peak\"\ncron = \"0 0 * * *\"\nduration = \"24h\"\nidle_count = 0\n",
    );
    let members: Vec<Member> = (1..=3).map(|id| worker(id, Work::Busy)).collect();
    let d = once(&g, &members, &[]);
    assert_eq!(d.desired, 3, "{:?}", d.steps);
    assert_eq!(d.bounds.idle_count, Some(0));
}

/// Issue 18: with scale_in.busy, a busy droplet or one whose busy state is missing is never a
/// victim, whatever the rules want.
#[test]
fn busy_droplets_are_never_victims() {
    let g = group(
        "min = 0\nmax = 10\n[scale_in]\nmin_age = \"0s\"\nbusy = 'x > 0'\n[[rule]]\nname = \"q\"\ndesired = 'y'\n",
    );
    let members = vec![
        worker(1, Work::Busy),
        worker(2, Work::Unknown),
        worker(3, Work::Idle(t0())),
    ];
    let d = once(&g, &members, &[Observation::Number(0.0)]);
    assert_eq!(d.victims, vec![3], "{:?}", d.steps);
    assert_eq!(d.desired, 2);
    assert!(
        d.steps.iter().any(|s| s.contains("not busy")),
        "{:?}",
        d.steps
    );
}

/// Every `stay at N` names what held it: a tolerance, missing data, a condition not held long
/// enough, a cooldown, a stabilization window, or a bound.
#[test]
fn every_stay_says_why() {
    let g = target_group("[cooldown]\ndown = \"5m\"\n[stabilization]\ndown = \"0s\"");
    let reason_of = |d: &Decision| -> String {
        assert_eq!(d.direction, None, "{:#?}", d.steps);
        let steps: Vec<&str> = d.steps.iter().map(String::as_str).collect();
        let line = do_scaler::policy::outcome_with_reason(&steps);
        assert!(line.starts_with("stay at "), "{line}");
        line
    };
    let within = once(&g, &active(2), &[Observation::Number(0.63)]);
    assert!(
        reason_of(&within).contains("tolerance"),
        "{:#?}",
        within.steps
    );
    let missing = once(&g, &active(2), &[Observation::Missing("no data".into())]);
    assert!(
        reason_of(&missing).contains("no data"),
        "{:#?}",
        missing.steps
    );
    let mut memory = GroupMemory {
        last_down: Some(t0() - Span::minutes(1)),
        ..GroupMemory::default()
    };
    let cooling = run(
        &g,
        &active(4),
        &[Observation::Number(0.1)],
        t0(),
        &mut memory,
    );
    assert!(
        reason_of(&cooling).contains("cooldown"),
        "{:#?}",
        cooling.steps
    );
    let condition = group(
        "min = 1\nmax = 5\n[[rule]]\nname = \"hot\"\nwhen = 'avg(x) > 1'\nfor = \"2m\"\nchange = \"+1\"\n",
    );
    let waiting = once(
        &condition,
        &active(2),
        &[Observation::Conditions(vec![Truth::True])],
    );
    assert!(
        reason_of(&waiting).contains("no rule proposes a change"),
        "{:#?}",
        waiting.steps
    );
    let at_max = once(
        &target_group_max(3, ""),
        &active(3),
        &[Observation::Number(0.9)],
    );
    assert!(reason_of(&at_max).contains("max"), "{:#?}", at_max.steps);
}

/// `plan`'s table and the JSON name a droplet's place the same way.
#[test]
fn member_states_print_as_they_serialize() {
    use do_scaler::policy::MemberState;
    for state in [
        MemberState::Active,
        MemberState::Booting,
        MemberState::Deleting,
        MemberState::Draining,
        MemberState::Off,
    ] {
        assert_eq!(
            serde_json::to_value(state).unwrap(),
            serde_json::json!(state.to_string())
        );
    }
}
