"""The mixture explorer: surrogates exported as JSON trees and one offline HTML page with a slider per domain."""
