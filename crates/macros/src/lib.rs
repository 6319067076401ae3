/*!
`embed_migrations!`: compiles an application's migrations into its own binary.

Use it through `migrate_tenants::embed_migrations!`, which re-exports it. The macro runs in
the application's crate: it resolves the directory against that crate's
`CARGO_MANIFEST_DIR` (as diesel's macro does), validates the set with the same rules the
runner applies at run time (a set the runner would refuse fails the build, naming every
problem), and expands to a `const` value listing every file through `include_str!`, so
cargo rebuilds the application when an embedded file changes. A newly *added* migration
directory is invisible to cargo: the application's `build.rs` says
`cargo:rerun-if-changed=migrations` (see the README).
*/

use migrate_tenants_set::{read_dir, MigrationSet, Origin, RawMigration};
use proc_macro::TokenStream;
use proc_macro2::TokenStream as Tokens;
use quote::quote;
use std::path::{Path, PathBuf};
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token};

/// Embeds a migrations directory (and its shared-schema set) into the calling crate.
///
/// ```ignore
/// pub const MIGRATIONS: migrate_tenants::EmbeddedMigrations = migrate_tenants::embed_migrations!("migrations");
/// ```
///
/// The path is relative to the calling crate's `Cargo.toml` (default `"migrations"`). A
/// `migrations_shared` directory beside it is embedded as the shared-schema set; name another
/// with `embed_migrations!("db/tenant", shared = "db/shared")`, or none with `shared = none`.
#[proc_macro]
pub fn embed_migrations(input: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(input as Args);
    match expand(&args) {
        Ok(tokens) => tokens.into(),
        Err(message) => syn::Error::new(args.span, message).to_compile_error().into(),
    }
}

/// Where the shared-schema set comes from.
enum Shared {
    /// `migrations_shared` beside the tenant set, when it exists.
    Beside,
    /// A named directory (it must exist).
    Dir(String),
    /// `shared = none`.
    None,
}

struct Args {
    dir: String,
    shared: Shared,
    span: proc_macro2::Span,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Args> {
        let span = input.span();
        let mut args = Args {
            dir: "migrations".into(),
            shared: Shared::Beside,
            span,
        };
        if input.is_empty() {
            return Ok(args);
        }
        if input.peek(LitStr) {
            args.dir = input.parse::<LitStr>()?.value();
            if input.is_empty() {
                return Ok(args);
            }
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                return Ok(args);
            }
        }
        let key: syn::Ident = input.parse()?;
        if key != "shared" {
            return Err(syn::Error::new(
                key.span(),
                "expected `shared = \"dir\"` or `shared = none`",
            ));
        }
        input.parse::<Token![=]>()?;
        args.shared = if input.peek(LitStr) {
            Shared::Dir(input.parse::<LitStr>()?.value())
        } else {
            let none: syn::Ident = input.parse()?;
            if none != "none" {
                return Err(syn::Error::new(none.span(), "expected a directory string or `none`"));
            }
            Shared::None
        };
        let _ = input.parse::<Option<Token![,]>>()?;
        Ok(args)
    }
}

fn expand(args: &Args) -> Result<Tokens, String> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|_| "CARGO_MANIFEST_DIR is not set")?);
    let tenant = embed_set(&root, &args.dir)?;
    let shared_dir = match &args.shared {
        Shared::None => None,
        Shared::Dir(dir) => Some(dir.clone()),
        Shared::Beside => {
            let beside = Path::new(&args.dir).with_file_name("migrations_shared");
            let beside = beside.to_string_lossy().into_owned();
            root.join(&beside).is_dir().then_some(beside)
        }
    };
    let shared = match shared_dir {
        Some(dir) => {
            let set = embed_set(&root, &dir)?;
            quote!(::core::option::Option::Some(#set))
        }
        None => quote!(::core::option::Option::None),
    };
    Ok(quote! {
        ::migrate_tenants::EmbeddedMigrations::__new(
            #tenant,
            #shared,
            ::core::env!("CARGO_PKG_NAME"),
            ::core::env!("CARGO_PKG_VERSION"),
        )
    })
}

/// Validates one directory and returns its `EmbeddedSet` expression.
fn embed_set(root: &Path, dir: &str) -> Result<Tokens, String> {
    let path = root.join(dir);
    let origin = Origin::Embedded {
        package: std::env::var("CARGO_PKG_NAME").unwrap_or_default(),
        version: std::env::var("CARGO_PKG_VERSION").unwrap_or_default(),
        dir: dir.to_string(),
    };
    let raw = read_dir(&path).map_err(|e| format!("embed_migrations!: {}: {e}", path.display()))?;
    MigrationSet::validate(origin, raw.clone()).map_err(|e| format!("embed_migrations!: {e}"))?;
    let files = raw.iter().map(|m| embed_files(&path, m));
    Ok(quote! {
        ::migrate_tenants::__private::EmbeddedSet {
            dir: #dir,
            files: &[#(#files),*],
        }
    })
}

fn embed_files(set_dir: &Path, m: &RawMigration) -> Tokens {
    let dir = set_dir.join(&m.dir_name);
    let name = &m.dir_name;
    let up = include(&dir.join("up.sql"), m.up.is_some());
    let down = include(&dir.join("down.sql"), m.down.is_some());
    let metadata = include(&dir.join("metadata.toml"), m.metadata.is_some());
    quote! {
        ::migrate_tenants::__private::EmbeddedFiles {
            dir_name: #name,
            up: #up,
            down: #down,
            metadata: #metadata,
        }
    }
}

/// `Some(include_str!(path))` (so cargo tracks the file) or `None`.
fn include(path: &Path, present: bool) -> Tokens {
    if present {
        let path = path.to_string_lossy().into_owned();
        quote!(::core::option::Option::Some(::core::include_str!(#path)))
    } else {
        quote!(::core::option::Option::None)
    }
}
