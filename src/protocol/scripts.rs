//! The Lua scripts in `lua/`, reached through typed fields, invoked by SHA1.
//!
//! Each script is embedded at build time and its SHA1 computed once. Calls go
//! out as `EVALSHA`; when Redis answers `NOSCRIPT` (its script cache is empty
//! after a restart, a failover or `SCRIPT FLUSH`) the call is replayed as
//! `EVAL` with the source, which also caches the script again. A `NOSCRIPT`
//! reply means the script did not run, so the replay cannot apply anything
//! twice. Pipelines get the same treatment, per command: redis-rs only does
//! it for single calls.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, FromRedisValue, RedisResult, ToRedisArgs, Value};

use crate::protocol::keys::QueueKeys;
use crate::protocol::reply::is_noscript;

/// How many keys every script takes first: the stats hash and the streams.
pub(crate) const COMMON_KEYS: usize = 5;

/// One Lua script: its name (the file stem), source and SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    pub(crate) name: &'static str,
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(name: &'static str, source: &'static str) -> Script {
        Script {
            name,
            source,
            sha: sha1_smol::Sha1::from(source).digest().to_string(),
        }
    }

    /// Starts a call on a queue. Every script takes the same first keys
    /// (`lua/README.md`): `KEYS[1]` the stats hash, `KEYS[2..5]` the four
    /// streams, most urgent first; `extra` follow from `KEYS[6]`. Add
    /// arguments with [`ScriptCall::arg`].
    pub(crate) fn call<K: AsRef<str>>(&'static self, keys: &QueueKeys, extra: &[K]) -> ScriptCall {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.sha).arg(COMMON_KEYS + extra.len());
        cmd.arg(keys.stats());
        for stream in keys.streams() {
            cmd.arg(stream.as_str());
        }
        for key in extra {
            cmd.arg(key.as_ref());
        }
        ScriptCall { script: self, cmd }
    }
}

/// Every script streamq runs. One field per file in `lua/`.
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) enqueue: Script,
    pub(crate) fetch: Script,
    pub(crate) ack: Script,
    pub(crate) retire_consumer: Script,
    pub(crate) dead_letter: Script,
    pub(crate) retry: Script,
    pub(crate) promote: Script,
    pub(crate) reclaim: Script,
    pub(crate) heartbeat: Script,
    pub(crate) requeue_dead: Script,
    pub(crate) recover: Script,
    pub(crate) release: Script,
    pub(crate) rate_groups: Script,
    pub(crate) defer: Script,
    pub(crate) schedule_upsert: Script,
    pub(crate) schedule_remove: Script,
    pub(crate) schedule_tick: Script,
    pub(crate) cancel: Script,
    pub(crate) drain: Script,
    pub(crate) clean_completed: Script,
    pub(crate) flow_add: Script,
    pub(crate) flow_child: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    enqueue: Script::new("enqueue", include_str!("../../lua/enqueue.lua")),
    fetch: Script::new("fetch", include_str!("../../lua/fetch.lua")),
    ack: Script::new("ack", include_str!("../../lua/ack.lua")),
    dead_letter: Script::new("dead_letter", include_str!("../../lua/dead_letter.lua")),
    retry: Script::new("retry", include_str!("../../lua/retry.lua")),
    promote: Script::new("promote", include_str!("../../lua/promote.lua")),
    reclaim: Script::new("reclaim", include_str!("../../lua/reclaim.lua")),
    heartbeat: Script::new("heartbeat", include_str!("../../lua/heartbeat.lua")),
    requeue_dead: Script::new("requeue_dead", include_str!("../../lua/requeue_dead.lua")),
    recover: Script::new("recover", include_str!("../../lua/recover.lua")),
    release: Script::new("release", include_str!("../../lua/release.lua")),
    rate_groups: Script::new("rate_groups", include_str!("../../lua/rate_groups.lua")),
    defer: Script::new("defer", include_str!("../../lua/defer.lua")),
    schedule_upsert: Script::new(
        "schedule_upsert",
        include_str!("../../lua/schedule_upsert.lua"),
    ),
    schedule_remove: Script::new(
        "schedule_remove",
        include_str!("../../lua/schedule_remove.lua"),
    ),
    schedule_tick: Script::new("schedule_tick", include_str!("../../lua/schedule_tick.lua")),
    cancel: Script::new("cancel", include_str!("../../lua/cancel.lua")),
    drain: Script::new("drain", include_str!("../../lua/drain.lua")),
    clean_completed: Script::new(
        "clean_completed",
        include_str!("../../lua/clean_completed.lua"),
    ),
    retire_consumer: Script::new(
        "retire_consumer",
        include_str!("../../lua/retire_consumer.lua"),
    ),
    flow_add: Script::new("flow_add", include_str!("../../lua/flow_add.lua")),
    flow_child: Script::new("flow_child", include_str!("../../lua/flow_child.lua")),
});

/// The script registry.
pub(crate) fn scripts() -> &'static Scripts {
    &SCRIPTS
}

/// A prepared `EVALSHA`, ready to send alone or in a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct ScriptCall {
    script: &'static Script,
    cmd: Cmd,
}

impl ScriptCall {
    /// Appends an argument (one or more ARGV entries).
    pub(crate) fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut ScriptCall {
        self.cmd.arg(arg);
        self
    }

    /// The script this call runs.
    pub(crate) fn script(&self) -> &'static Script {
        self.script
    }

    /// Sends the call by SHA1; on `NOSCRIPT` replays it once as `EVAL` with
    /// the script's source, which cannot answer `NOSCRIPT` and caches the
    /// script again for the next `EVALSHA`. (Loading then retrying by SHA1
    /// can lose the race against another `SCRIPT FLUSH`.)
    ///
    /// Cancel safety: if dropped before the reply arrives, the script may or
    /// may not have run.
    pub(crate) async fn invoke<T, C>(&self, conn: &mut C) -> RedisResult<T>
    where
        T: FromRedisValue,
        C: ConnectionLike,
    {
        match self.cmd.query_async(conn).await {
            Err(err) if is_noscript(&err) => {
                tracing::debug!(script = self.script.name, "NOSCRIPT: replaying with EVAL");
                self.with_source().query_async(conn).await
            }
            other => other,
        }
    }

    /// The same call as `EVAL <source> ...` instead of `EVALSHA <sha> ...`:
    /// for a `MULTI`/`EXEC` block, where an `EVALSHA` answered `NOSCRIPT`
    /// only at `EXEC`, after the commands queued around it ran.
    pub(crate) fn with_source(&self) -> Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(self.script.source);
        for arg in self.cmd.args_iter().skip(2) {
            if let redis::Arg::Simple(bytes) = arg {
                cmd.arg(bytes);
            }
        }
        cmd
    }
}

/// Sends many calls as one pipeline (one round trip) and returns one result
/// per call, in order. Calls answered `NOSCRIPT` are replayed, in one more
/// pipeline, as `EVAL` with their source; the others ran exactly once.
pub(crate) async fn invoke_pipelined<C: ConnectionLike>(
    conn: &mut C,
    calls: &[ScriptCall],
) -> RedisResult<Vec<RedisResult<Value>>> {
    let mut pipe = redis::pipe();
    for call in calls {
        pipe.add_command(call.cmd.clone());
    }
    let mut results: Vec<RedisResult<Value>> = pipe.ignore_errors().query_async(conn).await?;
    let missing: Vec<usize> = (0..calls.len())
        .filter(|&i| matches!(&results[i], Err(e) if is_noscript(e)))
        .collect();
    if missing.is_empty() {
        return Ok(results);
    }
    let mut replay = redis::pipe();
    for &i in &missing {
        replay.add_command(calls[i].with_source());
    }
    let replayed: Vec<RedisResult<Value>> = replay.ignore_errors().query_async(conn).await?;
    for (i, result) in missing.into_iter().zip(replayed) {
        results[i] = result;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::protocol::reply::status;

    fn all() -> Vec<&'static Script> {
        let s = scripts();
        vec![
            &s.enqueue,
            &s.fetch,
            &s.ack,
            &s.retire_consumer,
            &s.dead_letter,
            &s.retry,
            &s.promote,
            &s.reclaim,
            &s.heartbeat,
            &s.requeue_dead,
            &s.recover,
            &s.release,
            &s.rate_groups,
            &s.defer,
            &s.schedule_upsert,
            &s.schedule_remove,
            &s.schedule_tick,
            &s.cancel,
            &s.drain,
            &s.clean_completed,
            &s.flow_add,
            &s.flow_child,
        ]
    }

    /// The cells of each row of the markdown table whose header starts with
    /// `first`, by the row's first cell (backticks dropped).
    fn table(readme: &str, first: &str) -> BTreeMap<String, Vec<String>> {
        let mut rows = BTreeMap::new();
        let mut inside = false;
        for line in readme.lines() {
            let cells: Vec<String> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            if !line.trim_start().starts_with('|') {
                inside = false;
            } else if cells[0] == first {
                inside = true;
            } else if inside && !cells[0].starts_with("---") {
                rows.insert(cells[0].clone(), cells);
            }
        }
        rows
    }

    #[test]
    fn every_script_follows_the_contract_in_lua_readme() {
        let readme = include_str!("../../lua/README.md");
        let codes = table(readme, "code");
        let expected: BTreeMap<String, Vec<String>> = status::ALL
            .iter()
            .map(|(name, code)| (code.to_string(), vec![code.to_string(), (*name).to_owned()]))
            .collect();
        assert_eq!(
            codes
                .iter()
                .map(|(k, v)| (k.clone(), v[..2].to_vec()))
                .collect::<BTreeMap<_, _>>(),
            expected,
            "the status code table matches protocol::reply::status"
        );
        let rows = table(readme, "script");
        let names: BTreeSet<&str> = all().iter().map(|s| s.name).collect();
        assert_eq!(
            rows.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            names,
            "one row per script"
        );
        for script in all() {
            let row = &rows[script.name];
            let (header, code) = script
                .source
                .split_once("]]")
                .unwrap_or_else(|| panic!("{} has no header block", script.name));
            let shebang = header.lines().next().unwrap_or_default();
            let oom = shebang.contains("allow-oom");
            assert!(shebang.starts_with("#!lua"), "{}: shebang", script.name);
            assert_eq!(oom, row[1] == "allow-oom", "{}: flags", script.name);
            for line in [
                "KEYS[1]    stats hash",
                "KEYS[2..5] streams             critical, high, medium, low",
                "ARGV[1",
                "Returns    {OK",
            ] {
                assert!(
                    header.contains(line),
                    "{} header lacks {line:?}",
                    script.name
                );
            }
            let listed: BTreeSet<&str> = row[2].split(", ").collect();
            for (name, value) in status::ALL {
                let returned = code.contains(&format!("return {{ {name}"));
                let documented = header.contains(&format!("{{{name}"));
                let bound = code.contains(&format!("local {name}"))
                    || code.contains(&format!(", {name} = "))
                    || code.contains(&format!(", {name},"));
                assert_eq!(
                    returned,
                    listed.contains(name),
                    "{}: returns {name}?",
                    script.name
                );
                assert_eq!(
                    documented,
                    listed.contains(name),
                    "{}: documents {name}?",
                    script.name
                );
                if returned {
                    assert!(bound, "{} binds {name} to a local", script.name);
                    assert!(
                        binds_value(code, name, value),
                        "{} binds {name} to {value}",
                        script.name
                    );
                }
            }
            assert!(
                !code.contains("return {\n")
                    && !code.contains("return { 0")
                    && !code.contains("return { 1"),
                "{}: every return names its status",
                script.name
            );
        }
    }

    /// Whether the script's `local A, B = 0, 1` line binds `name` to `value`.
    fn binds_value(code: &str, name: &str, value: i64) -> bool {
        code.lines().any(|line| {
            let Some((names, values)) = line
                .trim()
                .strip_prefix("local ")
                .and_then(|l| l.split_once(" = "))
            else {
                return false;
            };
            names
                .split(", ")
                .zip(values.split(", "))
                .any(|(n, v)| n == name && v.trim() == value.to_string())
        })
    }

    #[test]
    fn every_lua_file_is_registered_once_with_a_distinct_sha() {
        let all = all();
        for script in &all {
            assert_eq!(script.sha.len(), 40, "{}", script.name);
        }
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/lua"))
            .expect("lua/ exists")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "lua"))
            })
            .count();
        assert_eq!(
            on_disk,
            all.len(),
            "every lua/*.lua file is registered, once"
        );
        let shas: BTreeSet<&str> = all.iter().map(|s| s.sha.as_str()).collect();
        assert_eq!(shas.len(), all.len());
    }
}
