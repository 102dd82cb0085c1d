//! The protocol loop: open documents, requests dispatched to `features`, diagnostics
//! published after every change. One thread; each answer takes milliseconds.

use crate::doc::Document;
use crate::{complete, features};
use lsp_server::{Connection, ErrorCode, Message, Notification, Request, RequestId, Response};
use lsp_types as lsp;
use lsp_types::notification::{self as note, Notification as _};
use lsp_types::request::{self as req, Request as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;

pub fn capabilities() -> lsp::ServerCapabilities {
    lsp::ServerCapabilities {
        position_encoding: Some(lsp::PositionEncodingKind::UTF16),
        text_document_sync: Some(lsp::TextDocumentSyncCapability::Kind(lsp::TextDocumentSyncKind::FULL)),
        hover_provider: Some(lsp::HoverProviderCapability::Simple(true)),
        definition_provider: Some(lsp::OneOf::Left(true)),
        references_provider: Some(lsp::OneOf::Left(true)),
        completion_provider: Some(lsp::CompletionOptions {
            trigger_characters: Some(vec![".".into(), ":".into(), ">".into(), "[".into(), "(".into()]),
            ..Default::default()
        }),
        rename_provider: Some(lsp::OneOf::Right(lsp::RenameOptions {
            prepare_provider: Some(true),
            work_done_progress_options: Default::default(),
        })),
        document_symbol_provider: Some(lsp::OneOf::Left(true)),
        document_formatting_provider: Some(lsp::OneOf::Left(true)),
        code_action_provider: Some(lsp::CodeActionProviderCapability::Options(lsp::CodeActionOptions {
            code_action_kinds: Some(vec![lsp::CodeActionKind::QUICKFIX]),
            ..Default::default()
        })),
        semantic_tokens_provider: Some(lsp::SemanticTokensServerCapabilities::SemanticTokensOptions(
            lsp::SemanticTokensOptions {
                legend: features::legend(),
                full: Some(lsp::SemanticTokensFullOptions::Bool(true)),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Serves one client over `connection` until it sends `shutdown` and `exit`.
pub fn serve(connection: &Connection) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let init = serde_json::json!({
        "capabilities": capabilities(),
        "serverInfo": { "name": "ordo-lsp", "version": env!("CARGO_PKG_VERSION") },
    });
    let (id, _params) = connection.initialize_start()?;
    connection.initialize_finish(id, init)?;
    let mut server = Server { docs: HashMap::new(), connection };
    for msg in &connection.receiver {
        match msg {
            Message::Request(r) => {
                if connection.handle_shutdown(&r)? {
                    return Ok(());
                }
                let response = server.request(r);
                connection.sender.send(Message::Response(response))?;
            }
            Message::Notification(n) => server.notification(n)?,
            Message::Response(_) => {}
        }
    }
    Ok(())
}

struct Server<'c> {
    docs: HashMap<lsp::Uri, Document>,
    connection: &'c Connection,
}

type SendResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

impl Server<'_> {
    fn notification(&mut self, n: Notification) -> SendResult {
        match n.method.as_str() {
            note::DidOpenTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp::DidOpenTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                let uri = p.text_document.uri;
                self.docs.insert(uri.clone(), Document::new(p.text_document.text));
                self.publish(&uri, Some(p.text_document.version))
            }
            note::DidChangeTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp::DidChangeTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                let uri = p.text_document.uri;
                // Full sync: the last change holds the whole text.
                let (Some(change), Some(doc)) =
                    (p.content_changes.into_iter().last(), self.docs.get_mut(&uri))
                else {
                    return Ok(());
                };
                doc.update(change.text);
                self.publish(&uri, Some(p.text_document.version))
            }
            note::DidCloseTextDocument::METHOD => {
                let Ok(p) = serde_json::from_value::<lsp::DidCloseTextDocumentParams>(n.params) else {
                    return Ok(());
                };
                self.docs.remove(&p.text_document.uri);
                // A closed file's problems leave the editor's list with it.
                self.send_diagnostics(p.text_document.uri, Vec::new(), None)
            }
            _ => Ok(()),
        }
    }

    fn publish(&self, uri: &lsp::Uri, version: Option<i32>) -> SendResult {
        let Some(doc) = self.docs.get(uri) else { return Ok(()) };
        self.send_diagnostics(uri.clone(), features::diagnostics(doc, uri), version)
    }

    fn send_diagnostics(
        &self,
        uri: lsp::Uri,
        diagnostics: Vec<lsp::Diagnostic>,
        version: Option<i32>,
    ) -> SendResult {
        let params = lsp::PublishDiagnosticsParams { uri, diagnostics, version };
        let n = Notification::new(note::PublishDiagnostics::METHOD.to_string(), params);
        self.connection.sender.send(Message::Notification(n))?;
        Ok(())
    }

    fn request(&mut self, r: Request) -> Response {
        let id = r.id.clone();
        match r.method.as_str() {
            req::HoverRequest::METHOD => self.on::<req::HoverRequest>(r, |doc, p| {
                Ok(features::hover(doc, p.text_document_position_params.position))
            }),
            req::GotoDefinition::METHOD => self.on::<req::GotoDefinition>(r, |doc, p| {
                let at = p.text_document_position_params;
                let found = features::definition(doc, &at.text_document.uri, at.position);
                Ok((!found.is_empty()).then_some(lsp::GotoDefinitionResponse::Array(found)))
            }),
            req::References::METHOD => self.on::<req::References>(r, |doc, p| {
                let at = p.text_document_position;
                let found = features::references(
                    doc,
                    &at.text_document.uri,
                    at.position,
                    p.context.include_declaration,
                );
                Ok((!found.is_empty()).then_some(found))
            }),
            req::Completion::METHOD => self.on::<req::Completion>(r, |doc, p| {
                let items = complete::completion(doc, p.text_document_position.position);
                Ok(Some(lsp::CompletionResponse::Array(items)))
            }),
            req::PrepareRenameRequest::METHOD => self
                .on::<req::PrepareRenameRequest>(r, |doc, p| Ok(features::prepare_rename(doc, p.position))),
            req::Rename::METHOD => self.on::<req::Rename>(r, |doc, p| {
                let at = p.text_document_position;
                features::rename(doc, &at.text_document.uri, at.position, &p.new_name)
            }),
            req::DocumentSymbolRequest::METHOD => self.on::<req::DocumentSymbolRequest>(r, |doc, _| {
                Ok(Some(lsp::DocumentSymbolResponse::Nested(features::document_symbols(doc))))
            }),
            req::Formatting::METHOD => {
                self.on::<req::Formatting>(r, |doc, _| Ok(Some(features::formatting(doc))))
            }
            req::CodeActionRequest::METHOD => self.on::<req::CodeActionRequest>(r, |doc, p| {
                let actions = features::code_actions(doc, &p.text_document.uri, p.range);
                Ok(Some(actions.into_iter().map(lsp::CodeActionOrCommand::CodeAction).collect()))
            }),
            req::SemanticTokensFullRequest::METHOD => self
                .on::<req::SemanticTokensFullRequest>(r, |doc, _| {
                    Ok(Some(lsp::SemanticTokensResult::Tokens(features::semantic_tokens(doc))))
                }),
            method => error(id, ErrorCode::MethodNotFound, format!("ordo-lsp does not answer `{method}`")),
        }
    }

    /// Decodes `r`'s parameters, finds its document and answers with `answer`.
    fn on<R>(
        &self,
        r: Request,
        answer: impl FnOnce(&Document, R::Params) -> Result<R::Result, String>,
    ) -> Response
    where
        R: lsp::request::Request,
        R::Params: DeserializeOwned + Documented,
        R::Result: Serialize,
    {
        let params: R::Params = match serde_json::from_value(r.params) {
            Ok(p) => p,
            Err(e) => {
                return error(
                    r.id,
                    ErrorCode::InvalidParams,
                    format!("bad parameters for {}: {e}", R::METHOD),
                );
            }
        };
        let Some(doc) = self.docs.get(params.uri()) else {
            return error(r.id, ErrorCode::InvalidParams, format!("{} is not open", params.uri().as_str()));
        };
        match answer(doc, params) {
            Ok(result) => Response::new_ok(r.id, result),
            Err(message) => error(r.id, ErrorCode::RequestFailed, message),
        }
    }
}

fn error(id: RequestId, code: ErrorCode, message: String) -> Response {
    Response::new_err(id, code as i32, message)
}

/// The document a request is about.
trait Documented {
    fn uri(&self) -> &lsp::Uri;
}

macro_rules! documented {
    ($($t:ty => |$p:ident| $e:expr;)*) => {
        $(impl Documented for $t {
            fn uri(&self) -> &lsp::Uri {
                let $p = self;
                &$e.uri
            }
        })*
    };
}

documented! {
    lsp::HoverParams => |p| p.text_document_position_params.text_document;
    lsp::GotoDefinitionParams => |p| p.text_document_position_params.text_document;
    lsp::ReferenceParams => |p| p.text_document_position.text_document;
    lsp::CompletionParams => |p| p.text_document_position.text_document;
    lsp::TextDocumentPositionParams => |p| p.text_document;
    lsp::RenameParams => |p| p.text_document_position.text_document;
    lsp::DocumentSymbolParams => |p| p.text_document;
    lsp::DocumentFormattingParams => |p| p.text_document;
    lsp::CodeActionParams => |p| p.text_document;
    lsp::SemanticTokensParams => |p| p.text_document;
}
