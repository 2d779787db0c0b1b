//! Opening hours of a destination, in the destination's own time zone.
//!
//! The catalog writes hours per weekday as `"HH:MM-HH:MM"` ranges
//! (`mon = ["09:00-12:00", "13:00-17:00"]`); a day that is not listed is
//! closed, and a destination without `hours` is always open. An overnight
//! shift is written as two ranges (`"22:00-24:00"` on one day and
//! `"00:00-06:00"` on the next). Closed dates close the whole local day.
//!
//! The question the auction asks is not "is it open now?" but "will it stay
//! open until this caller could be connected?" ([`Schedule::open_throughout`]),
//! so a buyer whose office closes in 30 seconds does not win a call that
//! would ring into an empty room.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// As written in the catalog: weekday (`mon`..`sun`) → ranges.
pub type HoursSpec = BTreeMap<String, Vec<String>>;

pub trait HoursSpecExt {
    fn problems(&self) -> Vec<(String, String)>;
}

impl HoursSpecExt for HoursSpec {
    fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (day, ranges) in self {
            if weekday(day).is_none() {
                out.push((
                    day.clone(),
                    "expected mon, tue, wed, thu, fri, sat or sun".to_string(),
                ));
                continue;
            }
            for range in ranges {
                if let Err(message) = parse_range(range) {
                    out.push((day.clone(), message));
                }
            }
        }
        out
    }
}

fn weekday(day: &str) -> Option<Weekday> {
    Some(match day {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// Minutes since local midnight, `[start, end)`, end may be 1440 (24:00).
fn parse_range(range: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{range}` is not a range like 09:00-17:00");
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let minutes = |text: &str| -> Option<u16> {
        let (h, m) = text.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (
        minutes(start).ok_or_else(bad)?,
        minutes(end).ok_or_else(bad)?,
    );
    if end <= start {
        return Err(format!(
            "`{range}` ends before it starts; split an overnight shift over two days"
        ));
    }
    Ok((start, end))
}

/// The compiled schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub tz: Tz,
    /// Per weekday (Mon = 0), sorted, merged `[start, end)` minute ranges.
    /// `None` = always open.
    week: Option<[Vec<(u16, u16)>; 7]>,
    closed_dates: Vec<NaiveDate>,
}

/// What a closed destination reports (recorded on the bid as the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Closed {
    ClosedDate,
    OutsideHours,
    ClosingSoon,
}

impl Schedule {
    pub fn always_open(tz: Tz) -> Schedule {
        Schedule {
            tz,
            week: None,
            closed_dates: Vec::new(),
        }
    }

    /// Compiles a validated spec (invalid entries are skipped; validation
    /// has already reported them).
    pub fn compile(tz: Tz, hours: Option<&HoursSpec>, closed_dates: &[NaiveDate]) -> Schedule {
        let week = hours.map(|hours| {
            let mut week: [Vec<(u16, u16)>; 7] = Default::default();
            for (day, ranges) in hours {
                let Some(day) = weekday(day) else { continue };
                let slot = &mut week[day.num_days_from_monday() as usize];
                slot.extend(ranges.iter().filter_map(|r| parse_range(r).ok()));
                slot.sort_unstable();
                let mut merged: Vec<(u16, u16)> = Vec::with_capacity(slot.len());
                for &(s, e) in slot.iter() {
                    match merged.last_mut() {
                        Some(last) if s <= last.1 => last.1 = last.1.max(e),
                        _ => merged.push((s, e)),
                    }
                }
                *slot = merged;
            }
            week
        });
        let mut closed_dates = closed_dates.to_vec();
        closed_dates.sort_unstable();
        Schedule {
            tz,
            week,
            closed_dates,
        }
    }

    /// Open at `at`, and stays open for `window` after it (crossing midnight
    /// into the next day's first range when they touch).
    pub fn open_throughout(&self, at: DateTime<Utc>, window: Duration) -> Result<(), Closed> {
        let local = at.with_timezone(&self.tz);
        if self.closed_dates.binary_search(&local.date_naive()).is_ok() {
            return Err(Closed::ClosedDate);
        }
        let Some(week) = &self.week else {
            return Ok(());
        };
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let day = local.weekday().num_days_from_monday() as usize;
        let Some(&(_, end)) = week[day].iter().find(|(s, e)| *s <= minute && minute < *e) else {
            return Err(Closed::OutsideHours);
        };
        // Seconds left in the current open range, extended into tomorrow when
        // today's range runs to midnight and tomorrow's starts at 00:00.
        let now_secs = i64::from(local.hour()) * 3600
            + i64::from(local.minute()) * 60
            + i64::from(local.second());
        let mut open_until = i64::from(end) * 60;
        if end == 24 * 60 {
            let tomorrow = local.date_naive().succ_opt();
            let tomorrow_closed =
                tomorrow.is_some_and(|d| self.closed_dates.binary_search(&d).is_ok());
            if !tomorrow_closed && let Some(&(0, next_end)) = week[(day + 1) % 7].first() {
                open_until += i64::from(next_end) * 60;
            }
        }
        if open_until - now_secs >= window.num_seconds() {
            Ok(())
        } else {
            Err(Closed::ClosingSoon)
        }
    }

    /// Local wall-clock time at `at` (for the caller's local time in pings).
    pub fn local_time(&self, at: DateTime<Utc>) -> NaiveTime {
        at.with_timezone(&self.tz).time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn schedule(hours: &[(&str, &[&str])], closed: &[NaiveDate]) -> Schedule {
        let spec: HoursSpec = hours
            .iter()
            .map(|(d, r)| (d.to_string(), r.iter().map(|s| s.to_string()).collect()))
            .collect();
        assert!(spec.problems().is_empty());
        Schedule::compile(chrono_tz::America::Chicago, Some(&spec), closed)
    }

    fn chicago(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        chrono_tz::America::Chicago
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn open_inside_hours_in_its_own_zone() {
        // 2026-11-23 is a Monday.
        let s = schedule(&[("mon", &["09:00-17:00"])], &[]);
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 10, 0), Duration::seconds(60)),
            Ok(())
        );
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 8, 59), Duration::seconds(0)),
            Err(Closed::OutsideHours)
        );
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 24, 10, 0), Duration::seconds(0)),
            Err(Closed::OutsideHours)
        );
    }

    #[test]
    fn closing_soon_is_not_eligible() {
        let s = schedule(&[("mon", &["09:00-17:00"])], &[]);
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 16, 59), Duration::seconds(90)),
            Err(Closed::ClosingSoon)
        );
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 16, 58), Duration::seconds(60)),
            Ok(())
        );
    }

    #[test]
    fn closed_dates_and_overnight_shifts() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let s = schedule(
            &[("mon", &["00:00-24:00"]), ("tue", &["00:00-02:00"])],
            &[day],
        );
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 12, 0), Duration::seconds(0)),
            Err(Closed::ClosedDate)
        );
        let s = schedule(&[("mon", &["22:00-24:00"]), ("tue", &["00:00-02:00"])], &[]);
        assert_eq!(
            s.open_throughout(chicago(2026, 11, 23, 23, 59), Duration::seconds(600)),
            Ok(())
        );
    }

    #[test]
    fn bad_ranges_are_named() {
        let spec: HoursSpec = [
            ("mon".to_string(), vec!["17:00-09:00".to_string()]),
            ("xyz".to_string(), vec![]),
        ]
        .into();
        let problems = spec.problems();
        assert_eq!(problems.len(), 2);
    }
}
