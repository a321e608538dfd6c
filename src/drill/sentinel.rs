//! What the drill asks the sentinels: who is master, fail over now, and
//! whether they all agree on a new master.

use std::time::Duration;

use crate::config::HostPort;

const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The sentinels of one master name.
pub struct Sentinels {
    pub addrs: Vec<HostPort>,
    pub name: String,
}

/// Why the sentinels cannot be used (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SentinelError {
    #[error("no sentinel answers ({0})")]
    Unreachable(String),
    #[error("the sentinels know no master named {0:?}")]
    UnknownMaster(String),
    #[error("SENTINEL FAILOVER refused: {0}")]
    FailoverRefused(String),
}

impl Sentinels {
    async fn ask(&self, addr: &HostPort, cmd: &redis::Cmd) -> Result<redis::Value, String> {
        let client = redis::Client::open(format!("redis://{}:{}", addr.host, addr.port))
            .map_err(|e| e.to_string())?;
        let work = async {
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            cmd.query_async::<redis::Value>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        tokio::time::timeout(ASK_TIMEOUT, work)
            .await
            .map_err(|_| "timed out".to_string())?
    }

    fn master_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("get-master-addr-by-name").arg(&self.name);
        cmd
    }

    /// The master each answering sentinel names (`None`: it does not know
    /// the name); the error of the last one when none answers.
    pub async fn masters(&self) -> Result<Vec<Option<HostPort>>, SentinelError> {
        let mut answers = Vec::new();
        let mut last_error = String::from("no sentinels given");
        for addr in &self.addrs {
            match self.ask(addr, &self.master_cmd()).await {
                Ok(value) => answers.push(parse_master(&value)),
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
        if answers.is_empty() {
            return Err(SentinelError::Unreachable(last_error));
        }
        Ok(answers)
    }

    /// The master all answering sentinels agree on, if they do.
    pub async fn agreed_master(&self) -> Result<Option<HostPort>, SentinelError> {
        let answers = self.masters().await?;
        if answers.iter().all(Option::is_none) {
            return Err(SentinelError::UnknownMaster(self.name.clone()));
        }
        let first = answers[0].clone();
        Ok(first.filter(|m| answers.iter().all(|a| a.as_ref() == Some(m))))
    }

    /// `SENTINEL FAILOVER <name>` on the first sentinel that answers.
    pub async fn failover(&self) -> Result<(), SentinelError> {
        let mut cmd = redis::cmd("SENTINEL");
        cmd.arg("FAILOVER").arg(&self.name);
        let mut last = String::new();
        for addr in &self.addrs {
            match self.ask(addr, &cmd).await {
                Ok(_) => return Ok(()),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(SentinelError::FailoverRefused(last))
    }
}

fn parse_master(value: &redis::Value) -> Option<HostPort> {
    let redis::Value::Array(parts) = value else {
        return None;
    };
    let host = redis::from_redis_value_ref::<String>(parts.first()?).ok()?;
    let port = redis::from_redis_value_ref::<String>(parts.get(1)?).ok()?;
    Some(HostPort {
        host,
        port: port.parse().ok()?,
    })
}
