//! A publishing connection for occasional publishers (the API, `vidflow
//! submit`), as opposed to the serve session's long-lived channels.

use lapin::{Channel, Connection};
use vidflow_job::JobSpec;

use super::{
    confirm_channel, connect, publish_control, publish_job, url_user, Control, PublishError,
    Topology,
};

/// A publishing connection that reconnects on demand: used by the API and
/// `vidflow submit`, which publish now and then rather than stream.
pub struct Publisher {
    url: String,
    name: String,
    topo: Topology,
    /// Declare the topology on connect (a tenant's broker user may not:
    /// it has no configure permission on the service's names).
    declare: bool,
    chan: tokio::sync::Mutex<Option<(Connection, Channel)>>,
}

impl Publisher {
    pub fn new(url: &str, name: &str, topo: Topology) -> Publisher {
        Publisher {
            url: url.to_string(),
            name: name.to_string(),
            topo,
            declare: true,
            chan: tokio::sync::Mutex::new(None),
        }
    }

    /// A publisher that never declares the topology (publishing as a
    /// tenant's own broker user; the service declared it).
    pub fn without_declare(mut self) -> Publisher {
        self.declare = false;
        self
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// A connected confirm channel (topology declared), reconnecting if
    /// the last one died.
    pub async fn channel(&self) -> Result<Channel, lapin::Error> {
        let mut g = self.chan.lock().await;
        if let Some((conn, ch)) = g.as_ref() {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        let conn = connect(&self.url, &self.name).await?;
        let ch = confirm_channel(&conn).await?;
        if self.declare {
            self.topo.declare(&ch).await?;
        }
        *g = Some((conn, ch.clone()));
        Ok(ch)
    }

    async fn reset(&self) {
        *self.chan.lock().await = None;
    }

    /// The broker user this publisher connects as.
    pub fn user(&self) -> String {
        url_user(&self.url)
    }

    /// [`publish_job`], retried once on a fresh connection.
    pub async fn publish_job(&self, spec: &JobSpec) -> Result<(), PublishError> {
        let mut last = None;
        let user = self.user();
        for _ in 0..2 {
            let ch = self.channel().await?;
            match publish_job(&ch, &self.topo, spec, &user).await {
                Err(PublishError::Amqp(e)) => {
                    self.reset().await;
                    last = Some(PublishError::Amqp(e));
                }
                r => return r,
            }
        }
        Err(last.unwrap_or(PublishError::Nacked))
    }

    /// [`publish_control`], retried once on a fresh connection.
    pub async fn publish_control(&self, c: &Control) -> Result<(), PublishError> {
        let mut last = None;
        let user = self.user();
        for _ in 0..2 {
            let ch = self.channel().await?;
            match publish_control(&ch, &self.topo, c, &user).await {
                Err(PublishError::Amqp(e)) => {
                    self.reset().await;
                    last = Some(PublishError::Amqp(e));
                }
                r => return r,
            }
        }
        Err(last.unwrap_or(PublishError::Nacked))
    }
}
