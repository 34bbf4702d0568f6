//! `qroute experiment report`: an experiment's results as Markdown and PNG.
