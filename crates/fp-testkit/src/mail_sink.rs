//! A local SMTP server that keeps every message it is given and delivers none: the mail sink of
//! `make run` (`fp-mail-sink` writes each message to `.run/mail/`) and of the notification tests.
//! It speaks just enough SMTP for a client such as lettre on loopback: EHLO/HELO, MAIL, RCPT,
//! DATA, RSET, NOOP, QUIT; no TLS, no authentication.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::lock;

/// Largest message taken; the sink is for notifications, not attachments.
const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;

/// One message as the sink took it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The envelope's sender (`MAIL FROM`).
    pub from: String,
    /// The envelope's recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message as sent (headers and body, CRLF line ends, dot-stuffing undone).
    pub data: String,
}

impl ReceivedMail {
    /// The header block and the body.
    fn parts(&self) -> (&str, &str) {
        self.data
            .split_once("\r\n\r\n")
            .unwrap_or((self.data.as_str(), ""))
    }

    /// The value of the first header `name` (any case), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let (headers, _) = self.parts();
        let mut found: Option<String> = None;
        for line in headers.split("\r\n") {
            match (&mut found, line.starts_with([' ', '\t'])) {
                (Some(value), true) => {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                (Some(_), false) => break,
                (None, _) => {
                    if let Some((key, value)) = line.split_once(':')
                        && key.eq_ignore_ascii_case(name)
                    {
                        found = Some(value.trim().to_owned());
                    }
                }
            }
        }
        found
    }

    /// The body as text, its transfer encoding (7bit, 8bit or quoted-printable) undone.
    pub fn text_body(&self) -> anyhow::Result<String> {
        let (_, body) = self.parts();
        let encoding = self
            .header("content-transfer-encoding")
            .unwrap_or_default()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "" | "7bit" | "8bit" => Ok(body.replace("\r\n", "\n")),
            "quoted-printable" => decode_quoted_printable(body),
            other => anyhow::bail!("body in {other}, which the sink does not decode"),
        }
    }
}

fn decode_quoted_printable(body: &str) -> anyhow::Result<String> {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'=' {
            let hex = joined
                .get(index + 1..index + 3)
                .context("a cut-off quoted-printable escape")?;
            decoded.push(u8::from_str_radix(hex, 16).context("a bad quoted-printable escape")?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    Ok(String::from_utf8(decoded)?.replace("\r\n", "\n"))
}

/// What the sink does with each message besides keeping it (the binary writes it to a file).
pub type OnMessage = Arc<dyn Fn(&ReceivedMail) + Send + Sync>;

/// A running sink; it stops when dropped.
pub struct MailSink {
    pub address: SocketAddr,
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MailSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MailSink {
    /// Listens on `listen` (port 0: any free port).
    pub async fn start(listen: SocketAddr, on_message: Option<OnMessage>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("the mail sink cannot listen on {listen}"))?;
        let address = listener.local_addr()?;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let session = Session {
            messages: messages.clone(),
            arrived: arrived.clone(),
            on_message,
        };
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let session = session.clone();
                tokio::spawn(async move {
                    if let Err(error) = session.serve(stream).await {
                        eprintln!("mail sink: a session ended: {error:#}");
                    }
                });
            }
        });
        Ok(MailSink {
            address,
            messages,
            arrived,
            task,
        })
    }

    /// The URL a client (lettre, `notifications.smtp_url`) reaches the sink at.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// Every message taken so far, in order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        lock(&self.messages).clone()
    }

    /// Waits up to `patience` until at least `count` messages have been taken; returns them all.
    pub async fn wait_for(
        &self,
        count: usize,
        patience: Duration,
    ) -> anyhow::Result<Vec<ReceivedMail>> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.arrived.notified();
            let messages = self.messages();
            if messages.len() >= count {
                return Ok(messages);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                anyhow::bail!(
                    "{} of {count} messages within {patience:?}: {messages:?}",
                    messages.len()
                );
            }
        }
    }
}

#[derive(Clone)]
struct Session {
    messages: Arc<Mutex<Vec<ReceivedMail>>>,
    arrived: Arc<Notify>,
    on_message: Option<OnMessage>,
}

impl Session {
    async fn serve(&self, stream: TcpStream) -> anyhow::Result<()> {
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        writer.write_all(b"220 fp-mail-sink ESMTP\r\n").await?;
        let mut from = String::new();
        let mut to = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end();
            let verb = command
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" => b"250-fp-mail-sink\r\n250-8BITMIME\r\n250 SIZE 10485760\r\n",
                "HELO" | "NOOP" => b"250 OK\r\n",
                "MAIL" => {
                    from = address_in(command);
                    to.clear();
                    b"250 OK\r\n"
                }
                "RCPT" => {
                    to.push(address_in(command));
                    b"250 OK\r\n"
                }
                "RSET" => {
                    from.clear();
                    to.clear();
                    b"250 OK\r\n"
                }
                "DATA" if to.is_empty() => b"503 RCPT first\r\n",
                "DATA" => {
                    writer
                        .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = read_data(&mut reader).await?;
                    let mail = ReceivedMail {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                    };
                    if let Some(on_message) = &self.on_message {
                        on_message(&mail);
                    }
                    lock(&self.messages).push(mail);
                    self.arrived.notify_waiters();
                    b"250 OK: kept\r\n"
                }
                "QUIT" => {
                    writer.write_all(b"221 Bye\r\n").await?;
                    return Ok(());
                }
                _ => b"502 Command not implemented\r\n",
            };
            writer.write_all(reply).await?;
        }
    }
}

/// The address between `<` and `>` of a MAIL or RCPT command.
fn address_in(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(address, _)| address.to_owned())
        .unwrap_or_default()
}

/// The message after DATA, up to the line with a single dot.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> anyhow::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(
            reader.read_line(&mut line).await? > 0,
            "the client left in the middle of a message"
        );
        if line == ".\r\n" || line == ".\n" {
            return Ok(data);
        }
        // Dot-stuffing: a line the client began with a dot got a second one.
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
        anyhow::ensure!(data.len() <= MAX_MESSAGE_BYTES, "message too large");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_unfolded_and_quoted_printable_is_decoded() {
        let mail = ReceivedMail {
            from: String::new(),
            to: Vec::new(),
            data: "To: a@example.com,\r\n b@example.com\r\nSubject: Hi\r\n\
                   Content-Transfer-Encoding: quoted-printable\r\n\r\n\
                   caf=C3=A9 and a long=\r\n line\r\n"
                .to_owned(),
        };
        assert_eq!(
            mail.header("to").as_deref(),
            Some("a@example.com, b@example.com")
        );
        assert_eq!(mail.header("SUBJECT").as_deref(), Some("Hi"));
        assert_eq!(mail.text_body().expect("decodes"), "café and a long line\n");
    }
}
