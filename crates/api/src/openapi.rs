//! The OpenAPI 3 document, served at `/api/openapi.json` and browsable (offline, vendored Swagger UI) at
//! `/api/docs`.

use crate::AppState;
use crate::routes::audit;
use crate::routes::csv;
use crate::routes::monitor;
use crate::routes::{account, admin, ops, records, security, session};
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "CRM API", description = "A CRM whose heart is permission management. Every path applies one policy; records you may not read answer 404 exactly like missing ones. Errors are RFC 9457 problem details."),
    paths(
        session::sign_in, session::complete_mfa, session::sign_out, session::me, account::step_up,
        account::change_password, account::sessions, account::sign_out_everywhere, account::end_session, account::sign_ins,
        account::tokens, account::create_token, account::revoke_token, account::mfa, account::totp_begin, account::totp_confirm,
        account::totp_disable, account::recovery_codes,
        security::get_settings, security::put_settings, security::user_security, security::reset_password, security::unlock,
        security::reset_mfa, security::end_sessions, security::sign_ins,
        records::list, records::search, records::count, records::report, records::create, records::get, records::update, records::delete,
        records::related, records::explain, records::reveal, records::share, records::sharing, records::unshare,
        records::lookup, records::put_team, records::delete_team,
        csv::export_csv, csv::import_csv,
        admin::get_policy, admin::put_policy, admin::list_users, admin::create_user, admin::update_user, admin::user_permissions,
        admin::list_departments, admin::create_department, admin::move_department, admin::explain, admin::who_can_see,
        audit::events, audit::export,
        monitor::get_rules, monitor::put_rules, monitor::list, monitor::get, monitor::acknowledge, monitor::resolve,
        monitor::assign, monitor::stream,
        ops::healthz, ops::metrics
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub fn routes() -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", ApiDoc::openapi()))
}
