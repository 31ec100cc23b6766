//! [`Classifier`] as a tower-http [`ClassifyResponse`], so `TraceLayer` (and anything else built on
//! tower-http's classification) sees the same failures as the retry and key layers.

use http::Response;
use tower_http::classify::{ClassifiedResponse, ClassifyResponse, SharedClassifier};

#[cfg(feature = "grpc")]
use super::grpc::{header_code, GrpcEos};
use super::{Classifier, FailureClass, Outcome};

impl Classifier {
    /// Wraps the classifier for tower-http's `TraceLayer::new(..)` and other `MakeClassifier` users.
    ///
    /// ```
    /// use gemini_balance::classify::Classifier;
    /// use tower_http::trace::TraceLayer;
    ///
    /// let trace = TraceLayer::new(Classifier::new().into_make_classifier());
    /// # let _ = trace;
    /// ```
    pub fn into_make_classifier(self) -> SharedClassifier<Self> {
        SharedClassifier::new(self)
    }
}

impl ClassifyResponse for Classifier {
    type FailureClass = FailureClass;
    /// With the `grpc` feature, a gRPC answer whose status comes in the trailers is judged there.
    #[cfg(feature = "grpc")]
    type ClassifyEos = GrpcEos;
    /// Without the `grpc` feature, every answer is judged by its head.
    #[cfg(not(feature = "grpc"))]
    type ClassifyEos = tower_http::classify::NeverClassifyEos<FailureClass>;

    fn classify_response<B>(
        self,
        res: &Response<B>,
    ) -> ClassifiedResponse<Self::FailureClass, Self::ClassifyEos> {
        // A layer below already read the error body: reuse its verdict.
        if let Some(outcome) = res.extensions().get::<Outcome>() {
            return ClassifiedResponse::Ready(match outcome {
                Outcome::Success => Ok(()),
                Outcome::Failure(class) => Err(class.clone()),
            });
        }
        #[cfg(feature = "grpc")]
        if is_grpc(res) && header_code(res.headers()).is_none() {
            return ClassifiedResponse::RequiresEos(GrpcEos {
                max_wait: self.max_retry_after,
            });
        }
        ClassifiedResponse::Ready(self.classify(res.status(), res.headers(), &[]))
    }

    fn classify_error<E>(self, error: &E) -> Self::FailureClass
    where
        E: std::fmt::Display + 'static,
    {
        super::transport::classify_display(error)
    }
}

/// `true` for a gRPC answer (`content-type: application/grpc…`).
#[cfg(feature = "grpc")]
fn is_grpc<B>(res: &Response<B>) -> bool {
    res.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
