//! Languages of the UI: Simplified Chinese and English. The language comes from the `lang` cookie (the user's
//! switch) or else the browser's `Accept-Language`; every label, message and error is looked up by id in one
//! catalog ([`CATALOG`]), and dates, numbers and money are formatted per language.

use axum::http::HeaderMap;
use axum::http::header;

/// The cookie holding the user's language choice.
pub const LANG_COOKIE: &str = "crm_lang";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// The `lang` cookie wins; then the first of zh/en in `Accept-Language` (quality order); else Chinese, the
    /// language of the organizations this CRM is built for.
    pub fn from_headers(headers: &HeaderMap) -> Lang {
        if let Some(l) = cookie(headers, LANG_COOKIE).and_then(|v| Lang::parse(&v)) {
            return l;
        }
        let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        Lang::from_accept_language(accept)
    }

    pub fn from_accept_language(accept: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for part in accept.split(',') {
            let mut it = part.trim().split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it.find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok())).unwrap_or(1.0);
            let lang = if tag.starts_with("zh") {
                Lang::Zh
            } else if tag.starts_with("en") {
                Lang::En
            } else {
                continue;
            };
            if best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, lang));
            }
        }
        best.map(|(_, l)| l).unwrap_or(Lang::Zh)
    }

    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh" | "zh-CN" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The `lang` attribute of the page.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The code of the cookie and the switch.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The other language (the switch offers it).
    pub fn other(self) -> Lang {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The message `id` in this language; an unknown id shows itself (a test keeps the catalog complete).
    pub fn t(self, id: &str) -> &'static str {
        match CATALOG.iter().find(|(k, _, _)| *k == id) {
            Some((_, zh, en)) => match self {
                Lang::Zh => zh,
                Lang::En => en,
            },
            None => {
                tracing::warn!(id, "missing translation");
                "?"
            }
        }
    }

    /// A label by prefix and code (`field`, `name` → `field.name`), falling back to the code itself for values
    /// that are organization data (business lines, sources), which are shown as entered.
    pub fn label(self, prefix: &str, code: &str) -> String {
        let id = format!("{prefix}.{code}");
        match CATALOG.iter().find(|(k, _, _)| *k == id) {
            Some((_, zh, en)) => match self {
                Lang::Zh => (*zh).to_string(),
                Lang::En => (*en).to_string(),
            },
            None => code.to_string(),
        }
    }

    /// Milliseconds since the epoch, in UTC: `2026-11-29 14:05 UTC` (zh) or `Nov 29, 2026 14:05 UTC` (en).
    pub fn datetime(self, ms: i64) -> String {
        self.datetime_in(ms, "UTC")
    }

    /// Milliseconds since the epoch in the IANA time zone `tz` (the organization's; UTC when unknown), with the
    /// zone's abbreviation: `2026-11-29 22:05 CST` (zh) or `Nov 29, 2026 22:05 CST` (en) in Asia/Shanghai.
    pub fn datetime_in(self, ms: i64, tz: &str) -> String {
        let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else { return String::new() };
        let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
        let local = ts.to_zoned_datetime(zone);
        match self {
            Lang::Zh => local.strftime("%Y-%m-%d %H:%M %Z").to_string(),
            Lang::En => local.strftime("%b %-d, %Y %H:%M %Z").to_string(),
        }
    }

    /// A `YYYY-MM-DD` date: unchanged in Chinese, `Mar 5, 2027` in English.
    pub fn date(self, iso: &str) -> String {
        match (self, iso.parse::<jiff::civil::Date>()) {
            (Lang::En, Ok(d)) => d.strftime("%b %-d, %Y").to_string(),
            _ => iso.to_string(),
        }
    }

    /// A validation message of the store (English, the JSON API's words) in this language: the messages the
    /// record schema and the record checks give are known and translated; any other is shown as it is.
    pub fn store_message(self, message: &str) -> String {
        if self == Lang::En {
            return message.to_string();
        }
        if let Some((_, zh)) = STORE_MESSAGES.iter().find(|(en, _)| *en == message) {
            return (*zh).to_string();
        }
        if let Some(n) = message.strip_prefix("must be at most ").and_then(|m| m.strip_suffix(" characters")) {
            return format!("最多 {n} 个字符");
        }
        if let Some(codes) = message.strip_prefix("must be one of: ") {
            return format!("必须是以下之一:{codes}");
        }
        if let Some(module) = message.strip_prefix("no such ").and_then(|m| m.strip_suffix(" record")) {
            return format!("没有这条{}记录", self.label("module", module));
        }
        message.to_string()
    }

    /// Money in cents: `¥1,234.00` (zh) or `CNY 1,234.00` (en).
    pub fn money(self, cents: i64) -> String {
        let sign = if cents < 0 { "-" } else { "" };
        let abs = cents.unsigned_abs();
        let body = format!("{}.{:02}", group_thousands(abs / 100), abs % 100);
        match self {
            Lang::Zh => format!("{sign}¥{body}"),
            Lang::En => format!("{sign}CNY {body}"),
        }
    }

    /// A whole number with thousands separators.
    pub fn number(self, n: i64) -> String {
        let sign = if n < 0 { "-" } else { "" };
        format!("{sign}{}", group_thousands(n.unsigned_abs()))
    }
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The store's fixed validation messages and their Chinese (see [`Lang::store_message`]).
static STORE_MESSAGES: &[(&str, &str)] = &[
    ("is required", "为必填项"),
    ("must be a whole number", "必须是整数"),
    ("must not be negative", "不能为负数"),
    ("must be a string", "必须是文本"),
    ("must not contain control characters", "不能包含控制字符"),
    ("must be an e-mail address", "必须是电子邮箱地址"),
    ("must be a phone number (digits, spaces, + - ( ))", "必须是电话号码(数字、空格、+ - ( ))"),
    ("must be a date YYYY-MM-DD", "必须是日期(YYYY-MM-DD)"),
    ("unknown field", "未知字段"),
    ("is read-only for you", "对您只读"),
    ("must be a user id", "必须是用户编号"),
    ("you may not assign records to this user", "您不能把记录分配给该用户"),
];

/// A cookie's value by name.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Message id, Simplified Chinese, English. Terms follow the glossary users of Chinese CRMs know.
pub static CATALOG: &[(&str, &str, &str)] = &[
    ("app.name", "客户关系管理", "CRM"),
    ("app.skip", "跳到主要内容", "Skip to main content"),
    ("nav.home", "首页", "Home"),
    ("nav.account", "我的账户", "My account"),
    ("nav.admin", "权限管理", "Permissions"),
    ("nav.audit", "审计日志", "Audit log"),
    ("nav.guide", "权限指南", "Permission guide"),
    ("nav.sign_out", "退出登录", "Sign out"),
    ("nav.language", "语言", "Language"),
    ("nav.switch_to", "English", "中文"),
    ("nav.main", "主导航", "Main navigation"),
    // Sign-in
    ("signin.title", "登录", "Sign in"),
    ("signin.username", "用户名", "Username"),
    ("signin.password", "密码", "Password"),
    ("signin.submit", "登录", "Sign in"),
    ("signin.failed", "用户名或密码错误。", "Invalid username or password."),
    ("signin.rate_limited", "登录尝试过多,请稍后再试。", "Too many sign-in attempts; try again later."),
    ("signin.mfa_title", "双重验证", "Two-step verification"),
    (
        "signin.mfa_help",
        "请输入身份验证器中的 6 位动态验证码,或一个恢复码。",
        "Enter the 6-digit code from your authenticator app, or a recovery code.",
    ),
    ("signin.otp", "动态验证码", "One-time code"),
    ("signin.recovery_code", "恢复码(可选)", "Recovery code (optional)"),
    ("signin.verify", "验证", "Verify"),
    ("signin.mfa_failed", "验证码错误或已过期,请重新登录。", "The code is wrong or expired; sign in again."),
    ("signin.expired", "会话已过期,请重新登录。", "Your session has ended; sign in again."),
    ("signin.form_expired", "表单已过期,请重试。", "The form expired; please try again."),
    // Home
    ("home.title", "首页", "Home"),
    ("home.my_records", "我负责的记录", "My records"),
    ("home.my_open_opportunities", "我的未结商机", "My open opportunities"),
    ("home.my_open_tickets", "未结工单", "Open tickets"),
    ("home.none", "暂无记录。", "Nothing here."),
    ("home.modules", "模块", "Modules"),
    // Modules and lists
    ("module.customers", "客户", "Customers"),
    ("module.contacts", "联系人", "Contacts"),
    ("module.leads", "线索", "Leads"),
    ("module.opportunities", "商机", "Opportunities"),
    ("module.tickets", "工单", "Tickets"),
    ("module.activities", "跟进记录", "Activities"),
    ("module.reports", "报表", "Reports"),
    ("module.users", "用户", "Users"),
    ("module.roles", "角色", "Roles"),
    ("module.sharing", "共享规则", "Sharing"),
    ("module.audit", "审计日志", "Audit"),
    ("module.monitoring", "实时监控", "Monitoring"),
    ("list.search", "搜索", "Search"),
    ("list.search_placeholder", "名称、电话、邮箱…", "Name, phone, email…"),
    ("list.filter", "筛选", "Filter"),
    ("list.filter_field", "筛选字段", "Filter field"),
    ("list.filter_value", "筛选值", "Filter value"),
    ("list.any", "(全部)", "(any)"),
    ("list.sort", "排序", "Sort"),
    ("list.sort_asc", "升序", "Ascending"),
    ("list.sort_desc", "降序", "Descending"),
    ("list.apply", "应用", "Apply"),
    ("list.reset", "重置", "Reset"),
    ("list.next", "下一页", "Next page"),
    ("list.first", "第一页", "First page"),
    ("list.total", "共 {n} 条", "{n} records"),
    ("list.empty", "没有符合条件的记录。", "No records match."),
    ("list.open", "打开", "Open"),
    ("list.export", "导出 CSV", "Export CSV"),
    // Fields
    ("field.id", "编号", "ID"),
    ("field.owner_id", "负责人", "Owner"),
    ("field.created_at", "创建时间", "Created"),
    ("field.updated_at", "更新时间", "Updated"),
    ("field.name", "名称", "Name"),
    ("field.industry", "行业", "Industry"),
    ("field.customer_type", "客户类型", "Customer type"),
    ("field.region", "区域", "Region"),
    ("field.business_line", "业务线", "Business line"),
    ("field.phone", "电话", "Phone"),
    ("field.email", "邮箱", "Email"),
    ("field.address", "地址", "Address"),
    ("field.annual_revenue", "年营业额", "Annual revenue"),
    ("field.account_id", "客户", "Account"),
    ("field.title", "职务", "Title"),
    ("field.company", "公司", "Company"),
    ("field.source", "来源", "Source"),
    ("field.status", "状态", "Status"),
    ("field.stage", "阶段", "Stage"),
    ("field.amount", "金额", "Amount"),
    ("field.close_date", "预计成交日期", "Close date"),
    ("field.contact_id", "联系人", "Contact"),
    ("field.subject", "主题", "Subject"),
    ("field.description", "描述", "Description"),
    ("field.priority", "优先级", "Priority"),
    ("field.kind", "类型", "Kind"),
    ("field.body", "内容", "Body"),
    ("field.due_date", "到期日", "Due date"),
    ("field.opportunity_id", "商机", "Opportunity"),
    ("field.ticket_id", "工单", "Ticket"),
    ("field.lead_id", "线索", "Lead"),
    // Enumerations
    ("enum.enterprise", "大客户/企业", "Enterprise"),
    ("enum.smb", "中小企业", "SMB"),
    ("enum.government", "政府", "Government"),
    ("enum.initial", "初步接洽", "Initial contact"),
    ("enum.qualified", "需求确认", "Qualified"),
    ("enum.proposal", "方案报价", "Proposal"),
    ("enum.negotiation", "谈判审核", "Negotiation"),
    ("enum.won", "赢单", "Won"),
    ("enum.lost", "输单", "Lost"),
    ("enum.low", "低", "Low"),
    ("enum.normal", "普通", "Normal"),
    ("enum.high", "高", "High"),
    ("enum.urgent", "紧急", "Urgent"),
    ("enum.open", "待处理", "Open"),
    ("enum.pending", "处理中", "Pending"),
    ("enum.resolved", "已解决", "Resolved"),
    ("enum.closed", "已关闭", "Closed"),
    ("enum.new", "新线索", "New"),
    ("enum.working", "跟进中", "Working"),
    ("enum.disqualified", "无效", "Disqualified"),
    ("enum.note", "备注", "Note"),
    ("enum.call", "电话", "Call"),
    ("enum.meeting", "拜访", "Meeting"),
    ("enum.task", "任务", "Task"),
    ("enum.technology", "科技", "Technology"),
    ("enum.manufacturing", "制造", "Manufacturing"),
    ("enum.logistics", "物流", "Logistics"),
    ("enum.finance", "金融", "Finance"),
    ("enum.healthcare", "医疗", "Healthcare"),
    ("enum.retail", "零售", "Retail"),
    ("enum.education", "教育", "Education"),
    ("enum.energy", "能源", "Energy"),
    // Record page
    ("record.details", "详细信息", "Details"),
    ("record.related", "相关列表", "Related lists"),
    ("record.masked", "已脱敏", "Masked"),
    ("record.reveal", "查看明文", "Reveal"),
    ("record.revealed", "已查看明文(已记入审计日志)", "Revealed (recorded in the audit log)"),
    ("record.edit", "编辑", "Edit"),
    ("record.save", "保存", "Save"),
    ("record.cancel", "取消", "Cancel"),
    ("record.saved", "已保存。", "Saved."),
    ("record.invalid", "请更正以下字段。", "Please correct the fields below."),
    ("record.why", "为何可见", "Why can I see this?"),
    ("record.back", "返回列表", "Back to the list"),
    // Errors
    ("error.title", "出错了", "Something went wrong"),
    ("error.not_found", "记录不存在,或您没有查看权限。", "No such record, or you may not see it."),
    ("error.forbidden", "您没有执行此操作的权限。", "You do not have permission to do that."),
    ("error.bad_request", "请求无效,请检查输入。", "The request is not valid; check your input."),
    ("error.csrf", "表单已失效,请刷新页面后重试。", "The form has expired; reload the page and try again."),
    (
        "error.restricted",
        "您所在组织不允许此网络或时段访问。",
        "Your organization does not allow access from this network or at this time.",
    ),
    (
        "error.internal",
        "服务器暂时无法完成请求,请稍后重试。",
        "The server could not complete the request; try again shortly.",
    ),
    ("error.conflict", "操作冲突:", "Conflict:"),
    ("error.home", "返回首页", "Back to home"),
    // Account
    ("account.title", "我的账户", "My account"),
    ("account.sessions", "我的会话", "My sessions"),
    ("account.sign_ins", "登录日志", "Sign-in history"),
    ("account.mfa", "多因素认证 (MFA)", "Multi-factor authentication (MFA)"),
    ("account.mfa_on", "已启用双重验证。剩余恢复码:", "Two-step verification is on. Recovery codes left:"),
    ("account.mfa_off", "尚未启用双重验证。", "Two-step verification is off."),
    (
        "account.mfa_required",
        "您的角色要求启用多因素认证,请先完成绑定。",
        "Your role requires a second factor: enrol one first.",
    ),
    ("account.mfa_enrol", "绑定身份验证器", "Set up an authenticator app"),
    (
        "account.mfa_scan",
        "用身份验证器扫描二维码,或手动输入密钥:",
        "Scan the QR code with your authenticator app, or type the key:",
    ),
    ("account.mfa_confirm", "确认绑定", "Confirm"),
    ("account.mfa_code", "身份验证器中的 6 位验证码", "6-digit code from the app"),
    ("account.mfa_bad_code", "验证码不正确,请重试。", "That code is not right; try again."),
    (
        "account.mfa_done",
        "双重验证已启用。请妥善保存以下恢复码,每个只能使用一次:",
        "Two-step verification is on. Keep these recovery codes safe; each works once:",
    ),
    ("account.step_up", "请先验证身份(输入当前动态验证码)。", "Confirm it is you first (a current one-time code)."),
    ("account.tokens", "API 令牌", "API tokens"),
    ("account.no_tokens", "暂无 API 令牌。", "No API tokens."),
    ("account.current", "当前", "current"),
    ("account.started", "开始时间", "Started"),
    ("account.last_seen", "最近活动", "Last seen"),
    ("account.address", "地址", "Address"),
    ("account.agent", "浏览器", "Browser"),
    ("account.result", "结果", "Result"),
    ("account.time", "时间", "Time"),
    ("account.end", "结束", "End"),
    ("account.name", "名称", "Name"),
    ("account.expires", "过期时间", "Expires"),
    ("account.never", "永不", "never"),
    // Administration
    ("admin.title", "权限管理", "Permission management"),
    ("admin.users", "用户", "Users"),
    ("admin.roles", "角色与功能权限", "Roles and module permissions"),
    (
        "admin.role_matrix_help",
        "每个角色在每个模块上的操作及数据范围。留空表示无此功能权限。修改在用户的下一次请求时生效。",
        "What each role may do in each module, and over which records. Empty means no permission. Changes hold at the user's next request.",
    ),
    ("admin.save_role", "保存角色", "Save role"),
    ("admin.role_saved", "角色已保存,立即生效。", "Role saved; it holds from the next request."),
    ("admin.username", "用户名", "Username"),
    ("admin.display_name", "姓名", "Name"),
    ("admin.status", "状态", "Status"),
    ("admin.roles_col", "角色", "Roles"),
    ("admin.departments", "部门", "Departments"),
    ("admin.deactivate", "停用", "Deactivate"),
    ("admin.activate", "启用", "Activate"),
    ("admin.unlock", "解锁", "Unlock"),
    ("admin.done", "已完成。", "Done."),
    ("admin.explain", "权限说明", "Explain access"),
    (
        "admin.explain_help",
        "选择用户与记录,查看该用户为何能(或不能)看到该记录,以及哪些用户能看到它。",
        "Pick a user and a record to see why they can (or cannot) see it, and who can see it.",
    ),
    ("admin.user_id", "用户", "User"),
    ("admin.module", "模块", "Module"),
    ("admin.record_id", "记录编号", "Record ID"),
    ("admin.allowed", "允许", "Allowed"),
    ("admin.denied", "不允许", "Denied"),
    ("admin.who_can_see", "谁能看到此记录", "Who can see this record"),
    ("admin.reasons", "原因", "Reasons"),
    ("status.active", "正常", "Active"),
    ("status.locked", "已锁定", "Locked"),
    ("status.deactivated", "已停用", "Deactivated"),
    ("scope.none", "—", "—"),
    ("scope.own", "本人", "Own"),
    ("scope.subordinates", "本人及下属", "Own and subordinates"),
    ("scope.department", "本部门", "Department"),
    ("scope.department_tree", "本部门及下属部门", "Department tree"),
    ("scope.all", "全公司", "All"),
    ("action.view", "查看", "View"),
    ("action.create", "新建", "Create"),
    ("action.edit", "编辑", "Edit"),
    ("action.delete", "删除", "Delete"),
    ("action.export", "导出", "Export"),
    ("action.import", "导入", "Import"),
    ("action.transfer", "转移", "Transfer"),
    ("action.share", "共享", "Share"),
    // Audit
    ("audit.title", "审计日志", "Audit log"),
    (
        "audit.help",
        "每一次查看、修改、查看明文和登录都记录在防篡改的哈希链中。",
        "Every read, change, reveal and sign-in is recorded in a tamper-evident hash chain.",
    ),
    ("audit.action", "操作", "Action"),
    ("audit.actor", "操作人", "Actor"),
    ("audit.outcome", "结果", "Outcome"),
    ("audit.target", "对象", "Target"),
    ("audit.detail", "详情", "Detail"),
    ("audit.verify", "校验完整性", "Verify integrity"),
    ("audit.verified_ok", "审计链完整:已校验 {n} 条。", "The chain is intact: {n} entries verified."),
    ("audit.verified_bad", "审计链校验失败:", "The chain failed verification:"),
    ("audit.older", "更早的记录", "Older entries"),
    ("reason.administrator", "管理员(查看/修改全部数据)", "Administrator (view/modify all data)"),
    ("reason.role_scope", "角色数据范围", "Role data scope"),
    ("reason.org_default", "数据共享默认设置", "Organization-wide default"),
    ("reason.partition_grant", "数据分区授权", "Partition grant"),
    ("reason.sharing_rule", "共享规则", "Sharing rule"),
    ("reason.manual_share", "手动共享", "Manual share"),
    ("reason.record_team", "相关团队", "Record team"),
    ("reason.parent", "由上级记录控制", "Controlled by parent"),
    ("reason.restriction", "限制规则", "Restriction rule"),
    ("share.title", "共享与相关团队", "Share and record team"),
    (
        "share.help",
        "手动共享或把同事加入相关团队;不能授予超过您自己的访问级别。",
        "Share by hand or add a colleague to the record team; nobody grants more than their own access.",
    ),
    ("share.username", "用户名", "Username"),
    ("share.level", "访问级别", "Access level"),
    ("share.kind", "方式", "How"),
    ("share.manual", "手动共享", "Manual share"),
    ("share.team", "加入相关团队", "Add to the record team"),
    ("share.submit", "共享", "Share"),
    ("share.done", "已共享。", "Shared."),
    ("share.team_done", "已加入相关团队。", "Added to the record team."),
    ("share.unknown_user", "没有这个用户。", "There is no such user."),
    ("level.read", "只读", "Read"),
    ("level.edit", "读写", "Read/write"),
    ("level.full", "完全控制", "Full"),
    ("result.success", "成功", "success"),
    ("result.failure", "失败", "failure"),
    ("result.denied", "拒绝", "denied"),
    ("account.new_token", "新建 API 令牌", "New API token"),
    ("account.create", "创建", "Create"),
    ("account.revoke", "撤销", "Revoke"),
    ("account.token_shown_once", "请立即复制此令牌,它只显示这一次:", "Copy this token now; it is shown only once:"),
    ("admin.new_user", "新建用户", "New user"),
    ("admin.email", "邮箱", "Email"),
    ("admin.initial_password", "初始密码(首次登录须修改)", "Initial password (changed at first sign-in)"),
    ("admin.role", "角色", "Role"),
    ("admin.department", "部门", "Department"),
    ("admin.create", "创建", "Create"),
    ("admin.department_tree", "部门架构", "Department tree"),
    ("admin.new_department", "新建下级部门", "New sub-department"),
    ("admin.parent", "上级部门", "Parent department"),
    ("admin.move_department", "调整部门位置", "Move a department"),
    ("admin.new_parent", "新的上级部门", "New parent department"),
    ("admin.move", "移动", "Move"),
    ("admin.name", "名称", "Name"),
    ("admin.policy", "数据权限设置总览", "Data access settings"),
    (
        "admin.policy_help",
        "数据共享默认设置、数据分区授权、共享规则、限制规则与用户组。限制规则是唯一能收窄访问的规则。",
        "Organization-wide defaults, partition grants, sharing rules, restriction rules and groups. Restriction rules are the only rules that narrow access.",
    ),
    ("admin.defaults", "数据共享默认设置", "Organization-wide defaults"),
    ("admin.partitions", "数据分区授权", "Partition grants"),
    ("admin.sharing_rules", "共享规则", "Sharing rules"),
    ("admin.restriction_rules", "限制规则", "Restriction rules"),
    ("admin.groups", "用户组", "Groups"),
    ("admin.fields", "字段权限", "Field permissions"),
    ("admin.fields_help", "未列出的字段为读写。", "Fields not listed are editable."),
    ("admin.none", "无", "None"),
    ("default.private", "私有", "Private"),
    ("default.public_read", "公开只读", "Public read-only"),
    ("default.public_read_write", "公开读写", "Public read/write"),
    ("default.controlled_by_parent", "由上级记录控制", "Controlled by parent"),
    ("field_access.hidden", "不可见", "Hidden"),
    ("field_access.masked", "脱敏", "Masked"),
    ("field_access.read_only", "只读", "Read-only"),
    ("field_access.editable", "读写", "Editable"),
    ("security.title", "登录策略", "Sign-in policies"),
    (
        "security.help",
        "多因素认证、IP 白名单和登录时段都是限制:适用的每一条都必须满足。会把您自己锁在外面的修改会被拒绝。",
        "MFA, IP allowlists and sign-in hours are restrictions: every one that applies must admit. A change that would lock you out is refused.",
    ),
    ("security.allowlist", "组织 IP 白名单(每行一个网段)", "Organization IP allowlist (one network per line)"),
    (
        "security.allowlist_help",
        "留空表示任何地址;例如 10.0.0.0/8 或 2001:db8::/32。",
        "Empty: any address; e.g. 10.0.0.0/8 or 2001:db8::/32.",
    ),
    ("security.time_zone", "时区(登录时段按此计算)", "Time zone (for sign-in hours)"),
    ("security.per_role", "各角色的要求", "Per role"),
    (
        "security.per_role_help",
        "IP 白名单用逗号分隔;登录时段如 mon-fri 09:00-18:00; sat 10:00-14:00(按上面的时区)。留空表示不限制。MFA 在角色页设置。",
        "Networks separated by commas; hours like mon-fri 09:00-18:00; sat 10:00-14:00 (in the time zone above). Empty: no restriction. MFA is set on the role's page.",
    ),
    ("security.networks", "IP 白名单", "IP allowlist"),
    ("security.hours", "登录时段", "Sign-in hours"),
    ("security.required", "必须", "required"),
    ("security.limits", "会话、锁定与密码", "Sessions, lockout and passwords"),
    ("security.sessions", "会话", "Sessions"),
    ("security.lockout", "账号锁定", "Lockout"),
    ("import.title", "导入", "Import"),
    (
        "import.help",
        "第一行是字段名(与导出相同)。全部成功才会导入;有错误时一条也不导入,并列出每个错误的行和字段。",
        "The first line names the fields (as in an export). Either every row is imported or none: errors are listed by row and field.",
    ),
    ("import.file", "选择 CSV 文件", "Choose a CSV file"),
    ("import.text", "CSV 内容", "CSV text"),
    ("import.submit", "导入", "Import"),
    ("import.reading", "正在读取文件", "Reading the file"),
    ("import.importing", "正在导入 {n} 行数据(全部成功或全部不导入)", "Importing {n} rows (all or nothing)"),
    ("import.created", "已导入 {n} 条记录。", "{n} records imported."),
    ("import.failed", "导入失败,未导入任何记录:", "Nothing was imported:"),
    ("list.import", "导入 CSV", "Import CSV"),
    ("admin.field", "字段", "Field"),
    (
        "admin.field_matrix_help",
        "字段权限:不可见的字段不会出现在任何页面、导出或筛选中;脱敏字段只显示部分字符,查看明文需要权限并记入审计日志。多个角色取最宽松的设置。",
        "Field permissions: a hidden field is in no page, export or filter; a masked one shows part of its value, and revealing it needs the right below and is audited. Several roles take the most permissive.",
    ),
    ("admin.reveal_rights", "可查看明文的模块", "Modules whose masked fields holders may reveal"),
    ("admin.require_mfa", "此角色必须启用多因素认证", "Holders of this role must use a second factor"),
    (
        "why.help",
        "您能看到这条记录,是因为下列规则(任何一条授予即可;限制规则会收窄):",
        "You can see this record because of the rules below (any one grant suffices; restriction rules narrow):",
    ),
    (
        "admin.users_help",
        "停用或锁定会立即结束该用户的所有会话;解锁清除登录失败造成的临时锁定。您只能管理自己管理范围内的用户。",
        "Deactivating or locking ends the user's sessions at once; unlock clears a lockout after failed sign-ins. You manage only users within your scope.",
    ),
    (
        "admin.departments_help",
        "部门架构决定“本部门”和“本部门及下属部门”数据范围;移动部门会在下一次请求时改变相关用户的访问。",
        "The department tree decides the department and department-tree scopes; a change holds at the affected users' next request.",
    ),
    ("rules.title", "共享规则与限制规则", "Sharing and restriction rules"),
    (
        "rules.help",
        "共享规则把符合条件的记录开放给角色或用户组;限制规则是唯一能收窄访问的规则,符合条件之外的记录对适用的用户不可见。修改在下一次请求时生效。",
        "A sharing rule opens records meeting its conditions to a role or group; a restriction rule is the only rule that narrows: holders see only records meeting its conditions. Changes hold at the next request.",
    ),
    ("rules.new", "新建规则", "New rule"),
    ("rules.kind", "规则类型", "Kind of rule"),
    ("rules.criteria", "条件(全部满足)", "Conditions (all must hold)"),
    ("rules.op", "比较", "Comparison"),
    ("rules.grantee", "共享给 / 适用于", "Shared with / applies to"),
    ("rules.exempt", "限制规则不适用于管理员", "Restriction does not apply to administrators"),
    ("rules.delete", "删除", "Delete"),
    (
        "admin.one_time_password",
        "一次性密码(只显示这一次,用户首次登录须修改):",
        "One-time password (shown once; the user changes it at first sign-in):",
    ),
    ("admin.reset_password", "重置密码", "Reset password"),
    ("admin.reset_mfa", "重置多因素认证", "Reset second factor"),
    (
        "admin.mfa_reset_done",
        "已重置多因素认证,该用户的会话已结束。",
        "Second factor reset; the user's sessions ended.",
    ),
    (
        "groups.help",
        "用户组是共享规则、数据分区授权和手动共享的对象。仍被规则引用的用户组不能删除。",
        "Groups are what sharing rules, partition grants and manual shares target. A group a rule still names cannot be removed.",
    ),
    ("groups.members", "成员", "Members"),
    ("groups.members_help", "成员用户名(用逗号或空格分隔)", "Member usernames (separated by commas or spaces)"),
    ("groups.new", "新建用户组", "New group"),
    (
        "partitions.help",
        "数据分区授权按区域、客户类型或业务线为用户、角色或用户组增加访问(只读或读写),与其他授权来源取并集。",
        "Partition grants add read or read/write access by region, customer type or business line for a user, role or group; they add to every other source of access.",
    ),
    ("partitions.new", "新建分区授权", "New partition grant"),
    ("partitions.dimension", "分区维度", "Dimension"),
    ("partitions.values", "分区", "Partitions"),
    ("partitions.values_help", "取值(用逗号分隔,例如 华东, 华南)", "Values (comma-separated, e.g. 华东, 华南)"),
    // Alerts (告警)
    ("nav.alerts", "告警", "Alerts"),
    ("alerts.title", "告警中心", "Alerts"),
    ("alerts.detail_title", "告警详情", "Alert"),
    (
        "alerts.help",
        "实时监控发现的异常操作。只显示您的审计查看范围内用户的告警;新告警会自动出现在列表顶部。",
        "Abnormal operations found by real-time monitoring. Only alerts about users within your audit view scope are shown; new alerts appear at the top as they are raised.",
    ),
    ("alerts.status", "状态", "Status"),
    ("alerts.rule", "规则", "Rule"),
    ("alerts.severity", "级别", "Severity"),
    ("alerts.subject", "涉及对象", "Subject"),
    ("alerts.assignee", "处理人", "Assignee"),
    ("alerts.any", "全部", "Any"),
    ("alerts.none", "没有符合条件的告警。", "No alerts match."),
    ("alerts.live_on", "实时告警:已连接", "Live feed: connected"),
    ("alerts.live_off", "实时告警:未连接(正在重试)", "Live feed: not connected (retrying)"),
    (
        "alerts.live_lagged",
        "实时告警:有告警未能及时显示,请刷新页面。",
        "Live feed: some alerts were missed; reload the page.",
    ),
    ("alerts.back", "返回告警列表", "Back to the alerts"),
    ("alerts.triggered", "触发时间", "Triggered"),
    ("alerts.raised", "告警时间", "Raised"),
    ("alerts.updated", "更新时间", "Updated"),
    ("alerts.note", "处理说明", "Resolution note"),
    ("alerts.what", "告警内容", "What was found"),
    ("alerts.acknowledge", "确认告警", "Acknowledge"),
    ("alerts.resolve", "处理完成", "Resolve"),
    ("alerts.assign", "指派处理人", "Assign"),
    ("alerts.nobody", "(不指派)", "(nobody)"),
    ("alerts.note_required", "请填写处理说明。", "A resolution note is required."),
    ("alerts.yes", "是", "yes"),
    ("alerts.no", "否", "no"),
    ("alert_status.open", "待处理", "Open"),
    ("alert_status.acknowledged", "已确认", "Acknowledged"),
    ("alert_status.resolved", "处理完成", "Resolved"),
    ("alert_severity.low", "低", "Low"),
    ("alert_severity.medium", "中", "Medium"),
    ("alert_severity.high", "高", "High"),
    ("alert_severity.critical", "严重", "Critical"),
    ("alert_rule.failed_sign_ins_account", "账号多次登录失败", "Repeated failed sign-ins (account)"),
    ("alert_rule.failed_sign_ins_ip", "同一地址多次登录失败", "Repeated failed sign-ins (address)"),
    ("alert_rule.new_network", "陌生网络登录", "Sign-in from a new network"),
    ("alert_rule.off_hours", "非工作时间操作", "Off-hours activity"),
    ("alert_rule.bulk_read", "批量查看", "Bulk reading"),
    ("alert_rule.large_export", "大量导出", "Large export"),
    ("alert_rule.repeated_exports", "频繁导出", "Repeated exports"),
    ("alert_rule.mass_delete", "批量删除", "Mass delete"),
    ("alert_rule.mass_transfer", "批量转移", "Mass transfer"),
    ("alert_rule.reveals", "频繁查看敏感字段", "Repeated reveals"),
    ("alert_rule.privilege_change", "权限变更", "Privilege change"),
    ("alert_rule.probing", "越权试探", "Probing"),
    ("alert_rule.baseline", "偏离日常行为", "Unusual activity"),
    ("alert_detail.rows", "行数", "Rows"),
    ("alert_detail.count", "次数", "Count"),
    ("alert_detail.threshold", "阈值", "Threshold"),
    ("alert_detail.window_minutes", "时间窗口(分钟)", "Window (minutes)"),
    ("alert_detail.module", "模块", "Module"),
    ("alert_detail.ip", "地址", "Address"),
    ("alert_detail.network", "网络", "Network"),
    ("alert_detail.known_networks", "常用网络", "Known networks"),
    ("alert_detail.failures", "失败次数", "Failures"),
    ("alert_detail.denials", "拒绝次数", "Denials"),
    ("alert_detail.records_read", "查看记录数", "Records read"),
    ("alert_detail.action", "操作", "Action"),
    ("alert_detail.limit", "上限", "Limit"),
    ("alert_detail.local_time", "当地时间", "Local time"),
    ("alert_detail.time_zone", "时区", "Time zone"),
    ("alert_detail.working_hours", "工作时间", "Working hours"),
    ("alert_detail.explanation", "说明", "Explanation"),
    ("alert_detail.response", "自动响应", "Response"),
    ("alert_detail.roles", "角色", "Roles"),
    ("alert_detail.change", "变更", "Change"),
    ("alert_detail.users", "用户", "Users"),
    ("alert_detail.metric", "指标", "Metric"),
    ("alert_detail.current", "当前值", "Current"),
    ("alert_detail.mean", "平均值", "Mean"),
    ("alert_detail.stddev", "标准差", "Standard deviation"),
    ("alert_detail.sigma", "偏离倍数", "Sigma"),
    // View as user
    ("view_as.title", "以用户身份查看", "View as user"),
    (
        "view_as.banner",
        "您正在以 {user} 的身份只读查看:所见即该用户所见。此次查看已记入审计日志。",
        "You are viewing as {user}, read-only: you see what this user sees. This view is recorded in the audit log.",
    ),
    ("view_as.exit", "结束查看", "Stop viewing"),
    ("view_as.modules", "该用户可见的模块", "Modules this user may view"),
    ("view_as.open", "以该用户身份查看(只读)", "View as this user (read-only)"),
    // Guide
    ("guide.title", "权限指南", "Permission guide"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_of_chinese_and_english() {
        assert_eq!(Lang::from_accept_language("en-US,en;q=0.9,zh-CN;q=0.8"), Lang::En);
        assert_eq!(Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("fr-FR, en;q=0.5"), Lang::En);
        assert_eq!(Lang::from_accept_language("fr-FR"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("zh;q=0.2, en;q=0.7"), Lang::En);
    }

    #[test]
    fn the_cookie_overrides_the_browser() {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_LANGUAGE, "zh-CN".parse().expect("header"));
        h.insert(header::COOKIE, "crm_lang=en; other=1".parse().expect("header"));
        assert_eq!(Lang::from_headers(&h), Lang::En);
    }

    #[test]
    fn money_dates_and_numbers_follow_the_language() {
        assert_eq!(Lang::Zh.money(123_456), "¥1,234.56");
        assert_eq!(Lang::En.money(100_000_000_000), "CNY 1,000,000,000.00");
        assert_eq!(Lang::En.money(-5), "-CNY 0.05");
        assert_eq!(Lang::Zh.number(1_234_567), "1,234,567");
        assert_eq!(Lang::En.date("2027-03-05"), "Mar 5, 2027");
        assert_eq!(Lang::Zh.date("2027-03-05"), "2027-03-05");
        // 2026-11-29T14:05:00Z
        assert_eq!(Lang::Zh.datetime(1_795_961_100_000), "2026-11-29 14:05 UTC");
        assert_eq!(Lang::En.datetime(1_795_961_100_000), "Nov 29, 2026 14:05 UTC");
        assert_eq!(Lang::Zh.datetime_in(1_795_961_100_000, "Asia/Shanghai"), "2026-11-29 22:05 CST");
        assert_eq!(Lang::En.datetime_in(1_795_961_100_000, "Europe/Berlin"), "Nov 29, 2026 15:05 CET");
        assert_eq!(Lang::Zh.datetime_in(1_795_961_100_000, "Mars/Olympus"), "2026-11-29 14:05 UTC", "unknown: UTC");
    }

    #[test]
    fn known_store_messages_are_translated_and_others_kept() {
        assert_eq!(Lang::Zh.store_message("is required"), "为必填项");
        assert_eq!(Lang::Zh.store_message("must be at most 200 characters"), "最多 200 个字符");
        assert_eq!(Lang::Zh.store_message("must be one of: a, b"), "必须是以下之一:a, b");
        assert_eq!(Lang::Zh.store_message("no such customers record"), "没有这条客户记录");
        assert_eq!(Lang::Zh.store_message("something new"), "something new");
        assert_eq!(Lang::En.store_message("is required"), "is required");
    }

    /// Every literal id passed to `t(...)` in the templates and the code is in the catalog, so no page shows `?`.
    #[test]
    fn every_id_the_pages_use_is_in_the_catalog() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut missing = Vec::new();
        let mut checked = 0;
        for dir in ["templates", "src"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("folder") {
                let path = entry.expect("entry").path();
                let text = std::fs::read_to_string(&path).expect("text");
                for (i, _) in text.match_indices("t(\"") {
                    let id: String = text[i + 3..].chars().take_while(|c| *c != '"').collect();
                    let looks_like_id =
                        id.contains('.') && id.chars().all(|c| c.is_ascii_lowercase() || "._".contains(c));
                    if !looks_like_id {
                        continue;
                    }
                    checked += 1;
                    if !CATALOG.iter().any(|(k, _, _)| *k == id) {
                        missing.push(format!("{}: {id}", path.display()));
                    }
                }
            }
        }
        assert!(checked > 100, "the scan found the pages' ids ({checked})");
        assert!(missing.is_empty(), "ids without a translation: {missing:?}");
    }

    #[test]
    fn every_message_id_is_unique_and_translated() {
        let mut seen = std::collections::BTreeSet::new();
        for (id, zh, en) in CATALOG {
            assert!(seen.insert(*id), "{id} twice");
            assert!(!zh.is_empty() && !en.is_empty(), "{id} lacks a translation");
        }
    }
}
