//! Publishes one `submission.created` event and exits once the broker has confirmed it.
//!
//!     AMQP_URL=amqp://survey:password@rabbitmq:5672/%2f \
//!     TENANT_ID=0190c6a2-0000-7000-8000-000000000001 \
//!     cargo run -p fp-publisher --example publish_submission

use fp_publisher::{EventBuilder, Publisher, PublisherOptions, Submission, SubmissionStatus};
use secrecy::SecretString;
use uuid::Uuid;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A secret from the start: the password never reaches a log line or `Debug`.
    let url = SecretString::from(std::env::var("AMQP_URL")?);
    let tenant_id = Uuid::parse_str(&std::env::var("TENANT_ID")?)?;
    let publisher = Publisher::connect(url, PublisherOptions::default()).await?;

    let submission = Submission {
        id: 42,
        campaign_id: 1,
        star_rating: 5,
        text_feedback: "Love this product!".to_owned(),
        customer_name: Some("Jane Doe".to_owned()),
        status: SubmissionStatus::Pending,
    };
    // Keep the event id if you publish again after an error of your own: the dispatcher
    // deduplicates by it.
    let event = EventBuilder::submission_created(tenant_id, submission).build();
    publisher.publish(&event).await?;
    println!("published event {}: confirmed", event.message_id);
    publisher.close().await?;
    Ok(())
}
