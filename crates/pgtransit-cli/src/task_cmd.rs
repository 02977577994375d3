//! `pgtransit task show`.

use std::path::PathBuf;

use clap::Subcommand;
use pgtransit::task::{Task, TaskView};

use pgtransit::Error;

#[derive(Subcommand)]
pub enum TaskCommand {
    /// Print the resolved task (every default filled in, passwords masked)
    Show {
        #[arg(short = 't', long = "task", value_name = "FILE")]
        task_file: PathBuf,
        /// Machine-readable output
        #[arg(long)]
        json: bool,
        /// Print the task as a native task file instead (without passwords)
        #[arg(long, conflicts_with = "json")]
        native: bool,
    },
}

pub fn run(cmd: TaskCommand) -> Result<u8, Error> {
    match cmd {
        TaskCommand::Show {
            task_file,
            json,
            native,
        } => {
            let task = Task::load(&task_file)?;
            let view = TaskView::of(&task);
            if json {
                crate::out::json(&view)?;
            } else if native {
                out!("{}", pgtransit::task::to_native_yaml(&task));
            } else {
                out!("{}", view.to_text());
            }
            Ok(0)
        }
    }
}
